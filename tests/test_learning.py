"""Seeded learning tests on the embedded world, from the shipped base.

The reference configuration (elbo / epg / dpm2) must raise the reward of the prompts it trains on by
a margin well above the measurement's own noise; the baselines (FlowGRPO's trajectory / grpo /
flow_sde, DiffusionNFT) must run and move the weights. The reward is measured on fixed seeds with
the EMA weights before and after, so each image is a paired comparison (same prompt, same noise).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elborl.config import Params
from elborl.models.generate import generate, image_seed
from elborl.rewards.geneval import partial_credit, select
from elborl.train import Trainer, ema_weights
from elborl.world.prompts import draw_tag_balanced, make_prompt_sets
from stages.train import build_trainer

PROMPTS, SEEDS = 4, 16


def _setup(spec, **train) -> tuple[Trainer, list[dict]]:
    params = Params.model_validate({"train": {"prompts_per_epoch": PROMPTS, **train}})
    rows = draw_tag_balanced(make_prompt_sets(spec, params.prompts)[0], PROMPTS, np.random.default_rng(123))
    return build_trainer(params, "assets/base", rows), rows


def _probe(trainer: Trainer, rows: list[dict]) -> np.ndarray:
    """Partial-credit reward of the EMA weights on SEEDS fixed noises per prompt, (PROMPTS * SEEDS,)."""
    metas = [m for m in rows for _ in range(SEEDS)]
    seeds = [image_seed(7, i, j) for i in range(len(rows)) for j in range(SEEDS)]
    with torch.inference_mode(), ema_weights(trainer.policy, trainer.ema):
        images = generate(trainer.policy, [m["prompt"] for m in metas], seeds, "dpm2", 10, progress=False)
    det, rules = trainer.detector, trainer.rules
    return np.array([partial_credit(select(det.detect(im), m["tag"], rules), m, rules) for im, m in zip(images, metas)])


def test_elbo_epg_dpm2_raises_the_train_reward(spec):
    trainer, rows = _setup(spec, lr=1e-4, optimizer_steps=4, micro_batch=16, group_size=16, epochs=12)
    before = _probe(trainer, rows)
    for epoch in range(trainer.cfg.epochs):
        trainer.epoch(epoch)
    diff = _probe(trainer, rows) - before  # paired: same prompt, same noise, before vs after
    gain, se = diff.mean(), diff.std(ddof=1) / np.sqrt(len(diff))
    # Margin: three standard errors of the paired difference (the measurement's own spread), and at
    # least 0.05 reward (a fifth of the base's distance to ... see the note in the issue).
    assert gain > max(3 * se, 0.05), f"gain {gain:.3f} +- {se:.3f}"


@pytest.mark.parametrize(
    "train",
    [
        {"estimator": "trajectory", "objective": "grpo", "sampler": "flow_sde", "clip_eps": 1e-4},
        {"objective": "nft"},
    ],
    ids=["trajectory-grpo-flow_sde", "nft"],
)
def test_baselines_run_and_move_the_weights(spec, train):
    trainer, _ = _setup(spec, lr=1e-4, group_size=4, steps=4, epochs=2, **train)
    before = [p.detach().clone() for p in trainer.policy.trainable_parameters()]
    metrics = [trainer.epoch(e) for e in range(2)]
    assert all(np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"]) for m in metrics)
    after = trainer.policy.trainable_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
