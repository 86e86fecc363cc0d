"""Likelihood estimators and the update on a tiny model: exact identities and determinism."""

import numpy as np
import pytest
import torch

from elborl.config import TrainConfig
from elborl.likelihood import elbo, elbo_terms, elbo_timesteps, trajectory_terms
from elborl.models.tiny import TinyConfig, TinyT2I, tiny_policy
from elborl.rollout import Rollout
from elborl.sampling import sample, timestep_grid
from elborl.seeding import sample_generators
from elborl.update import make_ema, make_optimizer, update

SMALL = TinyConfig(size=32, patch_size=4, num_layers=2, num_heads=2, head_dim=16, text_hidden=32, text_layers=1)
PROMPTS = ["a photo of a red circle", "a photo of two squares", "a photo of a cross", "a photo of a blue square"]


def test_elbo_weightings_match_formulas():
    gen = torch.Generator().manual_seed(0)
    x0, eps, v_pred = (torch.randn(5, 3, 4, 4, generator=gen) for _ in range(3))
    t = torch.rand(5, generator=gen)
    tb = t.view(-1, 1, 1, 1)
    v = eps - x0
    assert torch.allclose(elbo(v_pred, x0, eps, t, "simple"), -((v_pred - v) ** 2).mean((1, 2, 3)))
    path = -((1 - tb) / (tb + 1e-3) * (v_pred - v) ** 2).mean((1, 2, 3))
    assert torch.allclose(elbo(v_pred, x0, eps, t, "path_kl"), path)
    x0_hat = (1 - tb) * x0 + tb * eps - tb * v_pred
    w = (x0_hat - x0).abs().mean((1, 2, 3)).clamp_min(1e-5)
    assert torch.allclose(elbo(v_pred, x0, eps, t, "adaptive"), -((x0_hat - x0) ** 2).mean((1, 2, 3)) / w, rtol=1e-5)
    # The adaptive weight is a stop-gradient: the gradient is that of -mean ||err||^2 / w with w fixed.
    vp = v_pred.clone().requires_grad_(True)
    elbo(vp, x0, eps, t, "adaptive").sum().backward()
    expected = 2 * tb * (x0_hat - x0) / (48 * w.view(-1, 1, 1, 1))
    assert torch.allclose(vp.grad, expected, rtol=1e-4, atol=1e-6)


def test_elbo_timesteps_from_the_grid():
    grid = timestep_grid(10, shift=3.0)
    t = elbo_timesteps(grid, 200, None, "grid", torch.Generator().manual_seed(0))
    assert t.shape == (200, 9)  # K = floor(0.99 N)
    allowed = set(grid[:-1].tolist())
    for row in t.tolist():
        assert len(set(row)) == 9 and set(row) <= allowed  # distinct grid points, never t = 0
    assert (t == 1).any(dim=1).float().mean() > 0.8  # t = 1 is kept unless it is the dropped point
    u = elbo_timesteps(grid, 50, 4, "uniform", torch.Generator().manual_seed(0))
    assert u.shape == (50, 4) and (u > 0).all() and (u <= 1).all()


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_current_equals_old_gives_zero_log_ratio_exactly(finetune):
    policy = tiny_policy(TinyT2I.create(SMALL), finetune)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 3, 32, 32, generator=gen)
    t = elbo_timesteps(timestep_grid(10), 4, None, "grid", gen)
    for weighting in ("adaptive", "simple", "path_kl"):
        for term in elbo_terms(policy, x0, policy.encode(PROMPTS), t, weighting, gen):
            assert torch.equal(term.logp.detach(), term.logp_old)
            assert term.kl is not None and float(term.kl.abs().max()) == 0.0


def test_trajectory_log_prob_recomputed_equals_rollout_log_prob():
    policy = tiny_policy(TinyT2I.create(SMALL), "full")
    cond = policy.encode(PROMPTS)
    noise = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = sample(lambda x, t: policy.velocity(x, t, cond, "old"), noise, "flow_sde", steps=6, noise_level=0.7,
                 generator=torch.Generator().manual_seed(2), return_trajectory=True)  # fmt: skip
    dims = 3 * 32 * 32
    terms = list(trajectory_terms(policy, out.states, out.timesteps, cond, 0.7))
    assert len(terms) == 6
    for term, recorded in zip(terms, out.log_probs, strict=True):
        assert torch.allclose(term.logp_old, recorded / dims, atol=1e-5)
        assert torch.allclose(term.logp.detach(), recorded / dims, atol=1e-5)  # current == old at the start


def _batch(policy, estimator="elbo"):
    cfg_sampler = "flow_sde" if estimator == "trajectory" else "dpm2"
    metadata = [{"tag": "single_object", "prompt": p, "include": []} for p in PROMPTS for _ in range(2)]
    cond = policy.encode([m["prompt"] for m in metadata])
    noise = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    out = sample(lambda x, t: policy.velocity(x, t, cond, "old"), noise, cfg_sampler, steps=4,
                 generator=torch.Generator().manual_seed(4), return_trajectory=True)  # fmt: skip
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.7, 0.2, 0.2, 0.9, 0.1])
    return Rollout(metadata, torch.arange(4).repeat_interleave(2), out.x0, out.timesteps,
                   out.states if estimator == "trajectory" else None, np.zeros((8, 32, 32, 3), np.uint8), rewards,
                   rewards > 0.5)  # fmt: skip


@pytest.mark.parametrize(
    ("estimator", "objective"),
    [("elbo", "epg"), ("elbo", "pepg"), ("elbo", "par"), ("elbo", "grpo"), ("elbo", "nft"), ("trajectory", "grpo")],
)
def test_update_runs_changes_weights_and_is_deterministic(estimator, objective):
    sampler = "flow_sde" if estimator == "trajectory" else "dpm2"
    cfg = TrainConfig(
        estimator=estimator, objective=objective, sampler=sampler, steps=4, micro_batch=3, lr=1e-3, optimizer_steps=1
    )
    results = []
    for _ in range(2):
        policy = tiny_policy(TinyT2I.create(SMALL, seed=0), "full")
        params = policy.trainable_parameters()
        before = [p.detach().clone() for p in params]
        batch = _batch(policy, estimator)
        metrics = update(policy, make_optimizer(params, cfg), make_ema(params, cfg), batch, cfg, 0,
                         sample_generators((5,), batch.index))  # fmt: skip
        assert metrics["step"] == 1 and np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
        assert any(not torch.equal(a, b) for a, b in zip(before, params, strict=True))
        results.append([p.detach().clone() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*results, strict=True))
