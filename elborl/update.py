"""The policy update of one epoch: advantages, likelihood terms, loss, accumulate, clip, step, then
the sampling-policy soft update and the EMA (docs/ARCHITECTURE.md sections 2.4-2.8)."""

from __future__ import annotations

import math

import torch

from elborl.advantages import exact_advantages, standard_advantages
from elborl.config import TrainConfig
from elborl.likelihood import elbo_terms, elbo_timesteps, trajectory_terms
from elborl.objectives import OBJECTIVES, clip_fraction, nft_loss
from elborl.rollout import Rollout


class NonFiniteError(FloatingPointError):
    """A loss or gradient that is NaN or inf: the epoch stops before its optimizer step."""


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, betas (0.9, 0.999), eps 1e-8, weight decay from params (1e-4, not torch's 1e-2)."""
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg.weight_decay)


def make_ema(params: list[torch.nn.Parameter], cfg: TrainConfig):
    """EMA of the trained weights: diffusers' EMAModel, whose decay min((1 + s) / (10 + s), ema_decay)
    is FlowGRPO's warm-up (diffusers counts s from 0 at the first update, so that update copies)."""
    from diffusers.training_utils import EMAModel

    return EMAModel(params, decay=cfg.ema_decay, use_ema_warmup=False)


def compute_advantages(batch: Rollout, cfg: TrainConfig) -> torch.Tensor:
    """`exact` (scaled, no std) or `standard` (std-normalised); `nft` always uses standard ones."""
    if cfg.objective == "nft" or cfg.advantages == "standard":
        return standard_advantages(batch.rewards, batch.groups, cfg.per_group_std)
    return exact_advantages(batch.rewards, batch.groups, cfg.adv_scale)


def _terms(policy, batch: Rollout, idx: torch.Tensor, cond, cfg: TrainConfig, gen: torch.Generator):
    need_ref = cfg.beta_kl > 0
    if cfg.estimator == "trajectory":
        states = [s[idx] for s in batch.states]
        return trajectory_terms(policy, states, batch.grid, cond, cfg.noise_level, need_ref), len(states) - 1
    timesteps = elbo_timesteps(batch.grid, len(idx), cfg.elbo_k, cfg.elbo_timesteps, gen)  # (b, K)
    return elbo_terms(policy, batch.x0[idx], cond, timesteps, cfg.weighting, gen, need_ref), timesteps.shape[1]


def update(policy, optimizer, ema, batch: Rollout, cfg: TrainConfig, step: int, gen: torch.Generator) -> dict:
    """One epoch's update (`cfg.optimizer_steps` optimizer steps over the batch).

    Each micro-batch's terms are built one at a time; every term's loss is divided by the number of
    pieces accumulated into the step (micro-batches x terms) and backpropagated at once, so memory
    holds one term's graph.

    Args:
        policy: The `Policy` (weights current / old / ref).
        optimizer: Over `policy.trainable_parameters()`.
        ema: EMAModel over the same parameters.
        batch: The rewarded rollout.
        cfg: The `train` params section.
        step: Optimizer steps taken before this update (the soft update counts from 1).
        gen: RNG of the ELBO timesteps and noise.

    Returns:
        Metrics: loss, kl, abs_log_ratio, clip_frac, grad_norm, reward_mean, reward_std, strict, step.
    """
    adv = compute_advantages(batch, cfg)  # (B,), on the rollout's device
    params = policy.trainable_parameters()
    n = len(batch.metadata)
    chunks = torch.arange(n).tensor_split(cfg.optimizer_steps)
    sums = {"loss": 0.0, "kl": 0.0, "abs_log_ratio": 0.0, "clip_frac": 0.0, "grad_norm": 0.0}
    n_terms = 0
    for chunk in chunks:
        micro = chunk.split(cfg.micro_batch)
        optimizer.zero_grad(set_to_none=True)
        for idx in micro:
            idx = idx.to(batch.x0.device)
            cond = policy.encode([batch.metadata[i]["prompt"] for i in idx.tolist()])
            terms, k = _terms(policy, batch, idx, cond, cfg, gen)
            for term in terms:
                if cfg.objective == "nft":
                    loss = nft_loss(term.v_theta, term.v_old, term.x_t, term.x0, term.t, adv[idx], cfg.nft_beta,
                                    cfg.nft_adv_max)  # fmt: skip
                else:
                    loss = OBJECTIVES[cfg.objective](term.logp, term.logp_old, adv[idx], cfg)
                kl = term.kl.mean() if term.kl is not None else torch.zeros(())
                total = loss + cfg.beta_kl * kl
                if not torch.isfinite(total):  # before backward: no step ever follows a non-finite loss
                    raise NonFiniteError(f"non-finite loss {float(loss)} (kl {float(kl)}) at optimizer step {step + 1}")
                (total / (len(micro) * k)).backward()
                sums["loss"] += loss.item()
                sums["kl"] += kl.item()
                sums["abs_log_ratio"] += (term.logp - term.logp_old).detach().abs().mean().item()
                sums["clip_frac"] += clip_fraction(term.logp, term.logp_old, cfg.clip_eps)
                n_terms += 1
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
        if not math.isfinite(grad_norm):  # the optimizer step would write NaN into every weight
            raise NonFiniteError(f"non-finite gradient norm {grad_norm} at optimizer step {step + 1}")
        sums["grad_norm"] += grad_norm
        optimizer.step()
        step += 1
        policy.soft_update_old(min(cfg.decay_rate * step, cfg.decay_max))
        ema.step(params)
    metrics = {k: v / max(n_terms, 1) for k, v in sums.items() if k != "grad_norm"}
    metrics["grad_norm"] = sums["grad_norm"] / len(chunks)
    metrics["reward_mean"] = float(batch.rewards.mean())
    metrics["reward_std"] = float(batch.rewards.std(unbiased=False))
    metrics["strict"] = float(batch.correct.float().mean()) if batch.correct is not None else math.nan
    metrics["step"] = step
    return metrics
