"""Policy-gradient objectives (docs/ARCHITECTURE.md section 2.6), chosen by name.

Each takes one term's log-likelihoods logp (with grad) and logp_old (without), the advantages A
(all (B,)) and the train config, and returns a scalar loss to minimise. rho = exp(l), l = logp -
logp_old, sg = stop-gradient (detach). `nft` (DiffusionNFT) works on velocities: `nft_loss`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch


class ObjectiveConfig(Protocol):
    clip_eps: float
    grpo_adv_clip: float


Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, ObjectiveConfig], torch.Tensor]


def _ratio(logp: torch.Tensor, logp_old: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    log_ratio = logp - logp_old  # l, with grad through logp
    return log_ratio, torch.exp(log_ratio)


def epg(logp, logp_old, adv, cfg) -> torch.Tensor:
    """-mean( sg(rho) A E )."""
    _, rho = _ratio(logp, logp_old)
    return -(rho.detach() * adv * logp).mean()


def epg_noratio(logp, logp_old, adv, cfg) -> torch.Tensor:
    """-mean( A E )."""
    return -(adv * logp).mean()


def pepg(logp, logp_old, adv, cfg) -> torch.Tensor:
    """-mean( sg(rho) (A - sg(l)) E )."""
    log_ratio, rho = _ratio(logp, logp_old)
    return -(rho.detach() * (adv - log_ratio.detach()) * logp).mean()


def pepg_noratio(logp, logp_old, adv, cfg) -> torch.Tensor:
    """-mean( (A - sg(l)) E )."""
    log_ratio, _ = _ratio(logp, logp_old)
    return -((adv - log_ratio.detach()) * logp).mean()


def par(logp, logp_old, adv, cfg) -> torch.Tensor:
    """0.5 mean( sg(rho) (A - l)^2 ) (same gradient as pepg)."""
    log_ratio, rho = _ratio(logp, logp_old)
    return 0.5 * (rho.detach() * (adv - log_ratio) ** 2).mean()


def par_noratio(logp, logp_old, adv, cfg) -> torch.Tensor:
    """0.5 mean( (A - l)^2 )."""
    log_ratio, _ = _ratio(logp, logp_old)
    return 0.5 * ((adv - log_ratio) ** 2).mean()


def grpo(logp, logp_old, adv, cfg) -> torch.Tensor:
    """mean( max(-A rho, -A clip(rho, 1 - eps, 1 + eps)) ), A clamped to [-grpo_adv_clip, grpo_adv_clip]."""
    _, rho = _ratio(logp, logp_old)
    adv = adv.clamp(-cfg.grpo_adv_clip, cfg.grpo_adv_clip)
    unclipped = -adv * rho
    clipped = -adv * rho.clamp(1 - cfg.clip_eps, 1 + cfg.clip_eps)
    return torch.maximum(unclipped, clipped).mean()


#: name -> objective on one term. `nft` is separate (`nft_loss`): it needs velocities, not logp.
OBJECTIVES: dict[str, Objective] = {
    "epg": epg,
    "epg_noratio": epg_noratio,
    "pepg": pepg,
    "pepg_noratio": pepg_noratio,
    "par": par,
    "par_noratio": par_noratio,
    "grpo": grpo,
}


def clip_fraction(logp: torch.Tensor, logp_old: torch.Tensor, eps: float) -> float:
    """Share of samples whose ratio lies outside [1 - eps, 1 + eps]."""
    rho = torch.exp((logp - logp_old).detach())
    return float(((rho < 1 - eps) | (rho > 1 + eps)).float().mean())


def nft_loss(
    v_theta: torch.Tensor,
    v_old: torch.Tensor,
    x_t: torch.Tensor,
    x0: torch.Tensor,
    t: torch.Tensor,
    adv: torch.Tensor,
    beta: float,
    adv_max: float,
) -> torch.Tensor:
    """DiffusionNFT's forward-process loss, as the reference code runs it.

    A clamped to [-adv_max, adv_max]; r' = A / adv_max / 2 + 1/2 in [0, 1];
    v+ = (1 - beta) v_old + beta v_theta, v- = (1 + beta) v_old - beta v_theta;
    x0_hat+- = x_t - t v+-; L+- = mean_d ||x0_hat+- - x0||^2 / sg(mean_d |x0_hat+- - x0|) (>= 1e-5);
    loss = adv_max * mean( r' L+ / beta + (1 - r') L- / beta ).
    """
    r = adv.clamp(-adv_max, adv_max) / adv_max / 2 + 0.5  # (B,)
    tb = t.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    v_old = v_old.detach()
    losses = []
    for v in ((1 - beta) * v_old + beta * v_theta, (1 + beta) * v_old - beta * v_theta):
        err = (x_t - tb * v) - x0
        w = err.detach().double().abs().flatten(1).mean(1).clamp_min(1e-5).to(err.dtype)
        losses.append((err**2).flatten(1).mean(1) / w)
    positive, negative = losses
    return adv_max * (r * positive / beta + (1 - r) * negative / beta).mean()
