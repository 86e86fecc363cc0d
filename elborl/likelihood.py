"""Likelihood estimators of a final sample x0 (docs/ARCHITECTURE.md section 2.5), per term.

- `elbo`: one ELBO term from one draw (t, eps); `elbo_terms` draws K timesteps from the sampler's
  grid with a fresh eps each and evaluates current, old and ref at the SAME x_t.
- `trajectory_terms`: FlowGRPO's per-step Gaussian log-densities of a stored SDE rollout, recomputed
  under the current weights (with grad) and under old (without), divided by the dimension D.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from elborl import seeding
from elborl.sampling import flow_sde_mean_std, gaussian_log_prob

Weighting = Literal["adaptive", "simple", "path_kl"]
TimestepMode = Literal["grid", "uniform"]


def _bcast(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (x.dim() - 1))).to(x.dtype)  # (B, 1, 1, 1)


def elbo(
    v_pred: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, weighting: Weighting
) -> torch.Tensor:
    """One ELBO term per sample, means over all non-batch dims.

    With x_t = (1 - t) x0 + t eps and v = eps - x0:
    - simple: -mean_d ||v_theta - v||^2
    - adaptive: x0_hat = x_t - t v_theta, w = sg(mean_d |x0_hat - x0|) >= 1e-5 (float64),
      -mean_d ||x0_hat - x0||^2 / w
    - path_kl: -mean_d (1 - t) / (t + 1e-3) ||v_theta - v||^2

    Args:
        v_pred: v_theta(x_t, t), (B, ...).
        x0: Final samples, (B, ...).
        noise: eps, (B, ...).
        t: Times, (B,).
        weighting: One of the three.

    Returns:
        (B,) ELBO terms (differentiable through v_pred).
    """
    tb = _bcast(t, x0)
    if weighting == "simple":
        return -((v_pred - (noise - x0)) ** 2).flatten(1).mean(1)
    if weighting == "path_kl":
        return -(((1 - tb) / (tb + 1e-3)) * (v_pred - (noise - x0)) ** 2).flatten(1).mean(1)
    if weighting == "adaptive":
        x_t = (1 - tb) * x0 + tb * noise
        err = (x_t - tb * v_pred) - x0  # x0_hat - x0, (B, ...)
        # The weight is a stop-gradient normaliser, computed in float64 so tiny errors stay exact.
        w = err.detach().double().abs().flatten(1).mean(1).clamp_min(1e-5)  # (B,)
        return -(err**2).flatten(1).mean(1) / w.to(err.dtype)
    raise ValueError(f"weighting: expected adaptive, simple or path_kl, found {weighting!r}")


def elbo_timesteps(
    grid: torch.Tensor, batch: int, k: int | None, mode: TimestepMode, generator: seeding.Generators
) -> torch.Tensor:
    """The K timesteps of each sample, (B, K).

    `grid` mode (default, as the reference code): the sampler's grid without its last point (t = 0),
    shuffled per sample, first K kept (K = floor(0.99 N) when not given: N = 10 -> 9). `uniform`
    mode: K draws from U(0, 1] (K = N - 1 when not given... see `k`). `generator`: one for the batch, or
    one per sample (`seeding.sample_generators`: the draws of a sample do not depend on its batch).
    """
    points = grid[:-1]  # t_0 = 1 ... t_{N-1}; excludes t_N = 0
    n = len(points)
    k = k if k is not None else max(1, int(0.99 * n))
    if mode == "uniform":
        return 1 - seeding.rand((batch, k), generator)  # in (0, 1]
    order = torch.argsort(seeding.rand((batch, n), generator), dim=1)[:, :k]  # (B, K)
    return points[order]


@dataclass
class LikelihoodTerm:
    """One term for a batch: log-likelihood under current (with grad) and old (no grad), and what the
    KL and NFT losses need.

    Args:
        logp: (B,) under the current weights, differentiable.
        logp_old: (B,) under the sampling weights.
        v_theta: Current velocity (B, ...), differentiable (ELBO terms only).
        v_old, v_ref: Old and reference velocities (no grad; v_ref None when not needed).
        x_t, t, x0: The point the velocities were evaluated at (ELBO terms).
        kl: Per-sample KL integrand to the reference (B,), differentiable (None when not computed).
    """

    logp: torch.Tensor
    logp_old: torch.Tensor
    v_theta: torch.Tensor | None = None
    v_old: torch.Tensor | None = None
    v_ref: torch.Tensor | None = None
    x_t: torch.Tensor | None = None
    t: torch.Tensor | None = None
    x0: torch.Tensor | None = None
    kl: torch.Tensor | None = None


def elbo_terms(
    policy,
    x0: torch.Tensor,
    cond,
    timesteps: torch.Tensor,
    weighting: Weighting,
    generator: seeding.Generators,
    need_ref: bool = True,
) -> Iterator[LikelihoodTerm]:
    """ELBO terms of final samples, one per column of `timesteps` (B, K), yielded one at a time so
    the caller can backpropagate each before the next is built.

    For each term: fresh eps, x_t = (1 - t) x0 + t eps, then v_theta (grad), v_old and v_ref (no
    grad) at the SAME x_t; logp = ELBO(v_theta), logp_old = ELBO(v_old).
    """
    for j in range(timesteps.shape[1]):
        t = timesteps[:, j].to(x0.device, x0.dtype)  # (B,)
        # Drawn on the CPU generator(s) and moved: the same terms on any device.
        noise = seeding.randn(x0.shape, generator, x0.dtype).to(x0.device)  # (B, ...)
        tb = _bcast(t, x0)
        x_t = (1 - tb) * x0 + tb * noise
        v_theta = policy.velocity(x_t, t, cond, "current")
        with torch.no_grad():
            v_old = policy.velocity(x_t, t, cond, "old")
            v_ref = policy.velocity(x_t, t, cond, "ref") if need_ref else None
            logp_old = elbo(v_old, x0, noise, t, weighting)
        kl = ((v_theta - v_ref) ** 2).flatten(1).mean(1) if v_ref is not None else None
        yield LikelihoodTerm(elbo(v_theta, x0, noise, t, weighting), logp_old, v_theta, v_old, v_ref, x_t, t, x0, kl)


def trajectory_terms(
    policy,
    states: list[torch.Tensor],
    grid: torch.Tensor,
    cond,
    noise_level: float,
    need_ref: bool = True,
) -> Iterator[LikelihoodTerm]:
    """FlowGRPO's per-step terms of a stored `flow_sde` rollout x_0 ... x_N (docs/ARCHITECTURE.md 2.5).

    E_i = log N(x_{i+1}; mu_theta(x_i), s_i^2 |dt| I) / D, recomputed under current (grad) and old
    (no grad). The KL is FlowGRPO's Gaussian-mean form mean_d ||mu_theta - mu_ref||^2 / (2 s^2 |dt|).
    """
    for i in range(len(states) - 1):
        x, x_next = states[i], states[i + 1]
        t, t_next = grid[i], grid[i + 1]
        tb = t.expand(x.shape[0]).to(x.dtype)
        dims = x[0].numel()
        v_theta = policy.velocity(x, tb, cond, "current")
        mean, std = flow_sde_mean_std(x, v_theta, t, t_next, noise_level)
        logp = gaussian_log_prob(x_next, mean, std) / dims
        with torch.no_grad():
            v_old = policy.velocity(x, tb, cond, "old")
            mean_old, _ = flow_sde_mean_std(x, v_old, t, t_next, noise_level)
            logp_old = gaussian_log_prob(x_next, mean_old, std) / dims
            kl = None
            if need_ref:
                v_ref = policy.velocity(x, tb, cond, "ref")
                mean_ref, _ = flow_sde_mean_std(x, v_ref, t, t_next, noise_level)
        if need_ref:
            kl = ((mean - mean_ref) ** 2).flatten(1).mean(1) / (2 * std.to(mean.dtype) ** 2)
        yield LikelihoodTerm(logp, logp_old, kl=kl)
