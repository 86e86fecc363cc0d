"""Samplers against analytic truth: Gaussian data has a closed-form rectified-flow velocity."""

import math

import pytest
import torch

from elborl.sampling import flow_sde_step, gaussian_log_prob, sample, timestep_grid

MU = torch.tensor([1.0, -2.0, 0.5])
L = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [-0.3, 0.2, 0.7]])
SIGMA = L @ L.T  # data covariance


def exact_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[eps - x0 | x_t] for x0 ~ N(MU, SIGMA), x_t = (1 - t) x0 + t eps.

    Cov(x_t) = (1 - t)^2 SIGMA + t^2 I; E[x0 | x_t] = MU + (1 - t) SIGMA C^-1 (x - (1 - t) MU),
    E[eps | x_t] = t C^-1 (x - (1 - t) MU).
    """
    t = t.to(torch.float64)[:, None, None]  # (B, 1, 1)
    x = x.to(torch.float64)
    mu, sigma = MU.double(), SIGMA.double()
    cov = (1 - t) ** 2 * sigma + t**2 * torch.eye(3, dtype=torch.float64)  # (B, 3, 3)
    r = torch.linalg.solve(cov, (x - (1 - t[:, :, 0]) * mu).unsqueeze(-1)).squeeze(-1)  # C^-1 (x - m), (B, 3)
    x0 = mu + (1 - t[:, :, 0]) * (r @ sigma)  # SIGMA symmetric
    eps = t[:, :, 0] * r
    return (eps - x0).float()


def moments_error(x: torch.Tensor) -> tuple[float, float]:
    return (x.mean(0) - MU).norm().item(), (torch.cov(x.T) - SIGMA).norm().item()


@pytest.fixture(scope="module")
def noise():
    return torch.randn(20000, 3, generator=torch.Generator().manual_seed(0))


def test_timestep_grid():
    grid = timestep_grid(10)
    assert grid[0] == 1 and grid[-1] == 0 and len(grid) == 11 and torch.all(grid[1:] < grid[:-1])
    shifted = timestep_grid(10, shift=3.0)
    assert shifted[0] == 1 and shifted[-1] == 0 and torch.all(shifted[1:-1] > grid[1:-1])
    assert shifted[5].item() == pytest.approx(3 * 0.5 / (1 + 2 * 0.5))


@pytest.mark.parametrize(("sampler", "steps"), [("euler", 200), ("dpm2", 30)])
def test_ode_samplers_reach_the_data_distribution(noise, sampler, steps):
    x = sample(exact_velocity, noise, sampler, steps=steps).x0
    mean_err, cov_err = moments_error(x)
    assert mean_err < 0.05 and cov_err < 0.1, (mean_err, cov_err)


def test_dpm2_beats_euler_at_10_steps(noise):
    _, euler_cov = moments_error(sample(exact_velocity, noise, "euler", steps=10).x0)
    _, dpm2_cov = moments_error(sample(exact_velocity, noise, "dpm2", steps=10).x0)
    assert dpm2_cov < 0.5 * euler_cov, (dpm2_cov, euler_cov)
    # And dpm2 at 10 steps is as close as Euler needs 40 steps for.
    _, euler40 = moments_error(sample(exact_velocity, noise, "euler", steps=40).x0)
    assert dpm2_cov < euler40


def test_flow_sde_reaches_the_data_distribution(noise):
    gen = torch.Generator().manual_seed(1)
    out = sample(exact_velocity, noise, "flow_sde", steps=40, noise_level=0.7, generator=gen, return_trajectory=True)
    mean_err, cov_err = moments_error(out.x0)
    # The SDE keeps the marginals of the flow, up to its discretisation and the last step's noise.
    assert mean_err < 0.05 and cov_err < 0.25, (mean_err, cov_err)
    assert len(out.states) == 41 and len(out.log_probs) == 40 and out.log_probs[0].shape == (20000,)


def test_flow_sde_with_zero_noise_is_euler(noise):
    a = sample(exact_velocity, noise, "flow_sde", steps=10, noise_level=0.0).x0
    b = sample(exact_velocity, noise, "euler", steps=10).x0
    assert torch.allclose(a, b, atol=1e-6)


def test_flow_sde_step_formula_and_log_prob():
    gen = torch.Generator().manual_seed(0)
    x, v = torch.randn(4, 3, 8, 8, generator=gen), torch.randn(4, 3, 8, 8, generator=gen)
    eps = torch.randn(4, 3, 8, 8, generator=gen)
    a = 0.7
    for t, t_next in [(0.6, 0.5), (1.0, 0.9), (0.1, 0.0)]:
        x_next, log_prob, mean, std = flow_sde_step(x, v, t, t_next, a, noise=eps)
        sigma_guard = t_next if t == 1.0 else t
        s = a * math.sqrt(t / (1 - sigma_guard))
        dt = t_next - t
        mu = x * (1 + s**2 * dt / (2 * t)) + v * (1 + s**2 * (1 - t) / (2 * t)) * dt
        assert torch.allclose(mean, mu, atol=1e-6)
        assert std.item() == pytest.approx(s * math.sqrt(-dt), rel=1e-6)
        assert torch.allclose(x_next, mu + s * math.sqrt(-dt) * eps, atol=1e-6)
        # Independent density: torch.distributions, summed over all non-batch dims.
        ref = torch.distributions.Normal(mu.double(), s * math.sqrt(-dt)).log_prob(x_next.double()).sum((1, 2, 3))
        assert log_prob.shape == (4,)
        assert torch.allclose(log_prob.double(), ref, rtol=1e-5)


def test_gaussian_log_prob_matches_torch():
    x, m = torch.randn(5, 7), torch.randn(5, 7)
    std = torch.tensor(0.3)
    ref = torch.distributions.Normal(m, std).log_prob(x).sum(1)
    assert torch.allclose(gaussian_log_prob(x, m, std), ref, atol=1e-5)


def test_unknown_sampler():
    with pytest.raises(ValueError, match="sampler: expected one of euler, dpm2, flow_sde"):
        sample(exact_velocity, torch.zeros(1, 3), "heun")
