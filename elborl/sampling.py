"""Samplers for rectified flow, shared by every model: `euler` and `dpm2` ODEs, the `flow_sde` SDE.

Notation (docs/ARCHITECTURE.md section 2): x_t = (1 - t) x0 + t eps, t = 1 is noise, the model predicts
v = eps - x0. A sampler walks a grid 1 = t_0 > t_1 > ... > t_N = 0 and returns x at t_N. The model
enters as `velocity(x, t) -> v` with t of shape (B,), so classifier-free guidance, weight sets and
conditioning live with the caller (`guided` builds a CFG velocity).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from elborl import seeding

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SAMPLERS = ("euler", "dpm2", "flow_sde")


def timestep_grid(steps: int, shift: float = 1.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """The grid t_0 = 1 > ... > t_N = 0, shifted as SD3 does: t' = shift t / (1 + (shift - 1) t).

    Args:
        steps: Number of steps N (the grid has N + 1 points).
        shift: Timestep shift (1 = none; > 1 spends more steps at high noise).

    Returns:
        Float32 tensor (N + 1,).
    """
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    t = shift * t / (1 + (shift - 1) * t)
    return t.to(device=device, dtype=torch.float32)


def guided(cond: Velocity, uncond: Velocity | None, scale: float) -> Velocity:
    """Classifier-free guidance: v = v_uncond + scale (v_cond - v_uncond); scale 1 is `cond` alone."""
    if scale == 1.0 or uncond is None:
        return cond

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_u = uncond(x, t)
        return v_u + scale * (cond(x, t) - v_u)

    return velocity


def _batch_t(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.to(x.dtype).expand(x.shape[0])  # (B,)


def euler_step(x: torch.Tensor, v: torch.Tensor, t: float | torch.Tensor, t_next: float | torch.Tensor) -> torch.Tensor:
    """x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i)."""
    return x + (t_next - t) * v


def flow_sde_mean_std(
    x: torch.Tensor, v: torch.Tensor, t: float | torch.Tensor, t_next: float | torch.Tensor, noise_level: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The FlowGRPO step's Gaussian: (mean (B, ...), std 0-d), formulas as in `flow_sde_step`."""
    t = torch.as_tensor(t, dtype=torch.float64)
    t_next = torch.as_tensor(t_next, dtype=torch.float64)
    dt = t_next - t
    sigma_guard = torch.where(t == 1, t_next, t)
    s = noise_level * torch.sqrt(t / (1 - sigma_guard))
    # Scalars in float64, then cast: the coefficients are computed once per step, exactly.
    cx = (1 + s**2 * dt / (2 * t)).to(x.dtype)
    cv = ((1 + s**2 * (1 - t) / (2 * t)) * dt).to(x.dtype)
    std = (s * torch.sqrt(-dt)).to(x.dtype)
    return x * cx + v * cv, std


def flow_sde_step(
    x: torch.Tensor,
    v: torch.Tensor,
    t: float | torch.Tensor,
    t_next: float | torch.Tensor,
    noise_level: float,
    noise: torch.Tensor | None = None,
    generator: seeding.Generators = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One FlowGRPO SDE step (docs/ARCHITECTURE.md section 2.5) and its Gaussian log-density.

    sigma = t, dt = t_next - t < 0, s = a sqrt(sigma / (1 - sigma')) with sigma' = sigma except at
    sigma = 1, where sigma' = t_next (the grid's second point: FlowGRPO's guard against 1 / 0);
        mu = x (1 + s^2 dt / (2 sigma)) + v (1 + s^2 (1 - sigma) / (2 sigma)) dt,
        x_next = mu + s sqrt(-dt) eps.
    With a = 0 this is the Euler step.

    Args:
        x: State at t, (B, ...).
        v: Velocity at (x, t), same shape.
        t: Current time (scalar, in (0, 1]).
        t_next: Next time (scalar, < t).
        noise_level: a.
        noise: eps (drawn when None); pass the stored x_next - mu direction to re-evaluate a step.
        generator: RNG for eps: one on x's device, or one CPU generator per sample.

    Returns:
        (x_next, log_prob, mean, std): log_prob is log N(x_next; mean, std^2 I) summed over all
        non-batch dimensions, shape (B,); std is a 0-d tensor.
    """
    mean, std = flow_sde_mean_std(x, v, t, t_next, noise_level)
    if noise is None and isinstance(generator, list | tuple):  # one CPU generator per sample
        noise = seeding.randn(x.shape, generator, x.dtype).to(x.device)
    elif noise is None:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    x_next = mean + std * noise
    log_prob = gaussian_log_prob(x_next, mean, std)
    return x_next, log_prob, mean, std


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, std^2 I) summed over non-batch dims, (B,). Computed in float32 or wider."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    x, mean, std = x.to(dtype), mean.to(dtype), std.to(dtype)
    per_dim = -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return per_dim.flatten(1).sum(dim=1)


@dataclass
class SampleResult:
    """A sampler's output.

    Args:
        x0: Final samples (B, ...).
        timesteps: The grid used, (N + 1,).
        states: x_0 ... x_N (N + 1 tensors) when requested (`flow_sde` with return_trajectory).
        log_probs: Per-step log-densities, N tensors of shape (B,), when requested.
    """

    x0: torch.Tensor
    timesteps: torch.Tensor
    states: list[torch.Tensor] = field(default_factory=list)
    log_probs: list[torch.Tensor] = field(default_factory=list)


@torch.no_grad()
def sample(
    velocity: Velocity,
    noise: torch.Tensor,
    sampler: str = "dpm2",
    steps: int = 10,
    shift: float = 1.0,
    noise_level: float = 0.7,
    generator: seeding.Generators = None,
    return_trajectory: bool = False,
) -> SampleResult:
    """Integrate from noise (t = 1) to data (t = 0).

    Args:
        velocity: v(x, t) with t of shape (B,).
        noise: x at t = 1, (B, ...).
        sampler: `euler`, `dpm2` (DPM-Solver++(2M) for flow matching) or `flow_sde`.
        steps: Number of steps.
        shift: Timestep shift of the grid.
        noise_level: `flow_sde`'s a.
        generator: RNG for `flow_sde`'s noise (one, or one per sample).
        return_trajectory: Keep the states and (for `flow_sde`) per-step log-probs.

    Returns:
        A `SampleResult`.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {', '.join(SAMPLERS)}, found {sampler!r}")
    grid = timestep_grid(steps, shift, noise.device)
    x = noise
    out = SampleResult(x0=x, timesteps=grid)
    if return_trajectory:
        out.states.append(x)
    prev_x0: torch.Tensor | None = None
    prev_h: float | None = None
    for i in range(steps):
        t, t_next = grid[i], grid[i + 1]
        v = velocity(x, _batch_t(t, x))
        if sampler == "euler":
            x = euler_step(x, v, t, t_next)
        elif sampler == "flow_sde":
            x, log_prob, _, _ = flow_sde_step(x, v, t, t_next, noise_level, generator=generator)
            if return_trajectory:
                out.log_probs.append(log_prob)
        else:
            x, prev_x0, prev_h = _dpm2_step(x, v, float(t), float(t_next), prev_x0, prev_h)
        if return_trajectory:
            out.states.append(x)
    out.x0 = x
    return out


def _lambda(t: float) -> float:
    """log-SNR of rectified flow: log((1 - t) / t) (-inf at t = 1, +inf at t = 0)."""
    if t >= 1.0:
        return -math.inf
    if t <= 0.0:
        return math.inf
    return math.log((1 - t) / t)


def _dpm2_step(
    x: torch.Tensor, v: torch.Tensor, t: float, t_next: float, prev_x0: torch.Tensor | None, prev_h: float | None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """DPM-Solver++(2M) in data prediction, with alpha_t = 1 - t, sigma_t = t.

    x0_hat = x - t v; h = lambda_next - lambda;
    x_next = (t_next / t) x - alpha_next (e^{-h} - 1) D, with D = x0_hat (first order: the first step,
    the last step to t = 0, or after an infinite h) or D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev,
    r = h_prev / h (second order).
    """
    x0_hat = x - t * v
    h = _lambda(t_next) - _lambda(t)
    if t_next <= 0.0:
        return x0_hat, x0_hat, h  # lower-order final step: x_N = x0_hat
    second_order = prev_x0 is not None and prev_h is not None and math.isfinite(prev_h) and math.isfinite(h)
    if second_order:
        r = prev_h / h
        d = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * prev_x0
    else:
        d = x0_hat
    exp_neg_h = 0.0 if math.isinf(h) else math.exp(-h)
    x_next = (t_next / t) * x - (1 - t_next) * (exp_neg_h - 1) * d
    return x_next, x0_hat, h
