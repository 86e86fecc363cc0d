"""The RL training loop: each epoch samples, rewards, computes advantages and likelihoods, takes the
loss, steps, and logs one line. Deterministic under `train.seed` (every draw is seeded by (seed, epoch))."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import torch

from elborl.config import TrainConfig
from elborl.rewards.detectors import Detector
from elborl.rewards.geneval import DEFAULT_RULES, Rules
from elborl.rollout import reward, rollout
from elborl.update import make_ema, make_optimizer, update


@contextmanager
def ema_weights(policy, ema):
    """Temporarily load the EMA weights into the trained parameters (what evaluation samples)."""
    params = policy.trainable_parameters()
    ema.store(params)
    ema.copy_to(params)
    try:
        yield policy
    finally:
        ema.restore(params)


def train(
    policy,
    rows: list[dict],
    detector: Detector,
    cfg: TrainConfig,
    rules: Rules = DEFAULT_RULES,
    on_epoch: Callable[[int, dict], None] | None = None,
    log: Callable[[str], None] = print,
):
    """Run `cfg.epochs` epochs of rollout -> reward -> update.

    Args:
        policy: A `Policy` (its `current` weights are trained, `old` samples, `ref` anchors the KL).
        rows: Train prompts (GenEval metadata).
        detector: Judge of the rollouts.
        cfg: The `train` params section.
        rules: GenEval options.
        on_epoch: Called with (epoch, metrics) after each epoch (e.g. evaluation, checkpointing).
        log: One line per epoch.

    Returns:
        (history, ema): per-epoch metrics and the EMA of the trained weights.
    """
    params = policy.trainable_parameters()
    optimizer, ema = make_optimizer(params, cfg), make_ema(params, cfg)
    step, history = 0, []
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        batch = reward(rollout(policy, rows, cfg, epoch), detector, cfg.reward, rules)
        t_rollout = time.perf_counter() - start
        gen = torch.Generator().manual_seed(int(np.random.default_rng([cfg.seed, epoch, 1]).integers(2**62)))
        metrics = update(policy, optimizer, ema, batch, cfg, step, gen)
        step = metrics["step"]
        metrics.update(epoch=epoch, rollout_s=t_rollout, update_s=time.perf_counter() - start - t_rollout)
        history.append(metrics)
        log(f"epoch {epoch + 1}/{cfg.epochs}: reward {metrics['reward_mean']:.3f} strict {metrics['strict']:.3f} "
            f"loss {metrics['loss']:.4f} kl {metrics['kl']:.2e} |l| {metrics['abs_log_ratio']:.2e} "
            f"grad {metrics['grad_norm']:.3f} ({metrics['rollout_s']:.1f}s + {metrics['update_s']:.1f}s)")  # fmt: skip
        if on_epoch:
            on_epoch(epoch, metrics)
    return history, ema
