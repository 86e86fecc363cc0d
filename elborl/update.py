"""The policy update of one epoch: advantages, likelihood terms, loss, accumulate, clip, step, then
the sampling-policy soft update and the EMA (docs/ARCHITECTURE.md sections 2.4-2.8). On N ranks each
rank updates from its shard of the batch (`elborl.distributed`); the result equals the one-rank update."""

from __future__ import annotations

import math

import torch

from elborl.advantages import exact_advantages, standard_advantages
from elborl.config import TrainConfig
from elborl.distributed import SINGLE, Ranks
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


def compute_advantages(rewards: torch.Tensor, groups: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """`exact` (scaled, no std) or `standard` (std-normalised); `nft` always uses standard ones. Of the
    whole batch's rewards and group ids, (B,)."""
    if cfg.objective == "nft" or cfg.advantages == "standard":
        return standard_advantages(rewards, groups, cfg.per_group_std)
    return exact_advantages(rewards, groups, cfg.adv_scale)


def _terms(policy, batch: Rollout, idx: torch.Tensor, cond, cfg: TrainConfig, gen: list[torch.Generator]):
    need_ref = cfg.beta_kl > 0
    if cfg.estimator == "trajectory":
        states = [s[idx] for s in batch.states]
        return trajectory_terms(policy, states, batch.grid, cond, cfg.noise_level, need_ref), len(states) - 1
    timesteps = elbo_timesteps(batch.grid, len(idx), cfg.elbo_k, cfg.elbo_timesteps, gen)  # (b, K)
    return elbo_terms(policy, batch.x0[idx], cond, timesteps, cfg.weighting, gen, need_ref), timesteps.shape[1]


def update(
    policy,
    optimizer,
    ema,
    batch: Rollout,
    cfg: TrainConfig,
    step: int,
    gens: list[torch.Generator],
    ranks: Ranks = SINGLE,
) -> dict:
    """One epoch's update (`cfg.optimizer_steps` optimizer steps over the batch).

    Each micro-batch's terms are built one at a time; every term's loss is divided by the number of
    pieces accumulated into the step (micro-batches x terms) and backpropagated at once, so memory
    holds one term's graph. On N ranks: advantages from the gathered rewards of the whole batch, each
    rank's chunk is its slice of the step's samples, gradients are all-reduced (averaged) once per
    step, on the step's last piece (DDP's `no_sync` before it).

    Args:
        policy: The `Policy` (weights current / old / ref).
        optimizer: Over `policy.trainable_parameters()`.
        ema: EMAModel over the same parameters.
        batch: The rewarded rollout (this rank's shard).
        cfg: The `train` params section.
        step: Optimizer steps taken before this update (the soft update counts from 1).
        gens: One generator per sample of `batch` for its ELBO timesteps and noise
            (`seeding.sample_generators`).
        ranks: This process's rank.

    Returns:
        Metrics: loss, kl, abs_log_ratio, clip_frac, grad_norm, reward_mean, reward_std, strict, step.
    """
    rewards = ranks.gather(batch.rewards, batch.index, batch.size)  # (B,): the whole batch
    adv = compute_advantages(rewards, ranks.gather(batch.groups, batch.index, batch.size), cfg)[batch.index]  # (b,)
    params = policy.trainable_parameters()
    n = len(batch.metadata)
    chunks = torch.arange(n).tensor_split(cfg.optimizer_steps)
    sums = {"loss": 0.0, "kl": 0.0, "abs_log_ratio": 0.0, "clip_frac": 0.0}
    grad_norms = 0.0
    n_terms = 0
    for chunk in chunks:
        micro = chunk.split(cfg.micro_batch)
        optimizer.zero_grad(set_to_none=True)
        bad = None  # the first non-finite loss of the step
        for m, idx in enumerate(micro):
            idx = idx.to(batch.x0.device)
            cond = policy.encode([batch.metadata[i]["prompt"] for i in idx.tolist()])
            terms, k = _terms(policy, batch, idx, cond, cfg, [gens[i] for i in idx.tolist()])
            terms = iter(terms)
            for j in range(k):
                policy.sync_grads(m == len(micro) - 1 and j == k - 1)  # set before the term's forward
                term = next(terms)
                if cfg.objective == "nft":
                    loss = nft_loss(term.v_theta, term.v_old, term.x_t, term.x0, term.t, adv[idx], cfg.nft_beta,
                                    cfg.nft_adv_max)  # fmt: skip
                else:
                    loss = OBJECTIVES[cfg.objective](term.logp, term.logp_old, adv[idx], cfg)
                kl = term.kl.mean() if term.kl is not None else torch.zeros(())
                total = loss + cfg.beta_kl * kl
                if bad is None and not torch.isfinite(total):  # no step follows it (checked before the step)
                    bad = f"non-finite loss {float(loss)} (kl {float(kl)}) at optimizer step {step + 1}"
                (total / (len(micro) * k)).backward()  # every rank backpropagates: DDP syncs on all of them
                sums["loss"] += loss.item()
                sums["kl"] += kl.item()
                sums["abs_log_ratio"] += (term.logp - term.logp_old).detach().abs().mean().item()
                sums["clip_frac"] += clip_fraction(term.logp, term.logp_old, cfg.clip_eps)
                n_terms += 1
        if ranks.any(bad is not None):
            raise NonFiniteError(bad or f"non-finite loss on another rank at optimizer step {step + 1}")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))  # the same on every rank
        if not math.isfinite(grad_norm):  # the optimizer step would write NaN into every weight
            raise NonFiniteError(f"non-finite gradient norm {grad_norm} at optimizer step {step + 1}")
        grad_norms += grad_norm
        optimizer.step()
        step += 1
        policy.soft_update_old(min(cfg.decay_rate * step, cfg.decay_max))
        ema.step(params)
    metrics = ranks.mean({k: v / max(n_terms, 1) for k, v in sums.items()})
    metrics["grad_norm"] = grad_norms / len(chunks)
    metrics["reward_mean"] = float(rewards.mean())
    metrics["reward_std"] = float(rewards.std(unbiased=False))
    correct = ranks.gather(batch.correct.float(), batch.index, batch.size) if batch.correct is not None else None
    metrics["strict"] = float(correct.mean()) if correct is not None else math.nan
    metrics["step"] = step
    return metrics
