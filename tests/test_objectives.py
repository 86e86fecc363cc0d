"""Objectives: autograd gradients equal the hand-derived ones; the stated identities hold."""

from types import SimpleNamespace

import pytest
import torch

from elborl.advantages import exact_advantages, group_means, standard_advantages
from elborl.objectives import OBJECTIVES, nft_loss

CFG = SimpleNamespace(clip_eps=0.2, grpo_adv_clip=5.0)


def inputs(seed=0, b=64):
    gen = torch.Generator().manual_seed(seed)
    logp = torch.randn(b, generator=gen, dtype=torch.float64).requires_grad_(True)
    logp_old = logp.detach() + 0.3 * torch.randn(b, generator=gen, dtype=torch.float64)
    adv = torch.randn(b, generator=gen, dtype=torch.float64) * 2
    return logp, logp_old, adv


def grad_of(name, logp, logp_old, adv, cfg=CFG):
    logp = logp.detach().clone().requires_grad_(True)
    OBJECTIVES[name](logp, logp_old, adv, cfg).backward()
    return logp.grad


def expected_grad(name, logp, logp_old, adv, cfg=CFG):
    """dL/dlogp per sample, derived by hand (L is a mean over B samples)."""
    b = len(logp)
    lr = (logp - logp_old).detach()
    rho = lr.exp()
    if name == "epg":
        return -rho * adv / b
    if name == "epg_noratio":
        return -adv / b
    if name in ("pepg", "par"):
        return -rho * (adv - lr) / b
    if name in ("pepg_noratio", "par_noratio"):
        return -(adv - lr) / b
    if name == "grpo":
        a = adv.clamp(-cfg.grpo_adv_clip, cfg.grpo_adv_clip)
        # Gradient flows where the unclipped term is the max: A > 0 and rho < 1 + eps, or A < 0 and rho > 1 - eps.
        active = ((a > 0) & (rho < 1 + cfg.clip_eps)) | ((a < 0) & (rho > 1 - cfg.clip_eps))
        return torch.where(active, -a * rho / b, torch.zeros_like(rho))
    raise KeyError(name)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gradients_match_hand_derivation(name, seed):
    logp, logp_old, adv = inputs(seed)
    assert torch.allclose(grad_of(name, logp, logp_old, adv), expected_grad(name, logp, logp_old, adv), atol=1e-12)


def test_pepg_and_par_share_gradients():
    for seed in range(5):
        logp, logp_old, adv = inputs(seed)
        assert torch.allclose(grad_of("pepg", logp, logp_old, adv), grad_of("par", logp, logp_old, adv), atol=1e-12)
        a, b = grad_of("pepg_noratio", logp, logp_old, adv), grad_of("par_noratio", logp, logp_old, adv)
        assert torch.allclose(a, b, atol=1e-12)


def test_on_policy_epg_equals_epg_noratio():
    logp, _, adv = inputs(3)
    same = logp.detach().clone()
    for f in ("epg", "epg_noratio"):
        assert OBJECTIVES[f](logp, same, adv, CFG).item() == pytest.approx(
            OBJECTIVES["epg"](logp, same, adv, CFG).item()
        )
    assert torch.equal(grad_of("epg", logp, same, adv), grad_of("epg_noratio", logp, same, adv))


def test_grpo_gradient_vanishes_outside_the_clip_range():
    logp_old = torch.zeros(4, dtype=torch.float64)
    # rho = e^l: far above 1 + eps and far below 1 - eps, each with a positive and a negative advantage.
    logp = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=torch.float64)
    g = grad_of("grpo", logp, logp_old, adv)
    assert g[0] == 0 and g[3] == 0  # A > 0 above the range, A < 0 below it: clipped, no gradient
    assert g[1] != 0 and g[2] != 0  # the pessimistic side keeps its gradient
    # Advantages are clamped to +-grpo_adv_clip.
    big = grad_of("grpo", torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64),
                  torch.tensor([50.0], dtype=torch.float64))  # fmt: skip
    assert big.item() == pytest.approx(-5.0)


def test_nft_loss_matches_formula_and_pulls_toward_positive_branch():
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, 4, 4, generator=gen), torch.randn(6, 3, 4, 4, generator=gen)
    t = torch.rand(6, generator=gen)
    x_t = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * eps
    v_old = torch.randn(6, 3, 4, 4, generator=gen)
    v_theta = v_old.clone().requires_grad_(True)
    adv = torch.tensor([10.0, 2.0, 0.0, -1.0, -3.0, -7.0])
    beta, adv_max = 0.1, 5.0
    loss = nft_loss(v_theta, v_old, x_t, x0, t, adv, beta, adv_max)
    r = adv.clamp(-adv_max, adv_max) / adv_max / 2 + 0.5
    tb = t.view(-1, 1, 1, 1)
    terms = []
    for v in ((1 - beta) * v_old + beta * v_theta, (1 + beta) * v_old - beta * v_theta):
        err = x_t - tb * v - x0
        terms.append((err**2).mean((1, 2, 3)) / err.detach().abs().mean((1, 2, 3)).clamp_min(1e-5))
    expected = adv_max * (r * terms[0] / beta + (1 - r) * terms[1] / beta).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_advantages():
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 0.2, 0.8])
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    assert torch.allclose(group_means(rewards, groups), torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5]))
    assert torch.allclose(exact_advantages(rewards, groups, 0.1), 0.1 * (rewards - 0.5))
    std = rewards.std(unbiased=False)  # population std over the whole batch
    assert torch.allclose(standard_advantages(rewards, groups), (rewards - 0.5) / (std + 1e-4))
    per_group = standard_advantages(rewards, groups, per_group_std=True)
    assert torch.allclose(per_group, torch.tensor([1.0, -1.0, 0.0, 0.0, -1.0, 1.0]), atol=1e-3)
