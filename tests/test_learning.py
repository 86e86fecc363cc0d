"""RL from the shipped base on the embedded world: the baselines (FlowGRPO's trajectory / grpo /
flow_sde, DiffusionNFT) run and move the weights. (Whether the reference raises the reward is
measured by `bench/learning.py`; see issue 4's note for why that is not yet a test.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from elborl.config import Params
from elborl.train import Trainer
from elborl.world.prompts import draw_tag_balanced, make_prompt_sets
from stages.train import build_trainer
from tests.conftest import ROOT

PROMPTS = 4


def _setup(spec, **train) -> tuple[Trainer, list[dict]]:
    params = Params.model_validate({"train": {"prompts_per_epoch": PROMPTS, **train}})
    rows = draw_tag_balanced(make_prompt_sets(spec, params.prompts)[0], PROMPTS, np.random.default_rng(123))
    return build_trainer(params, ROOT / "assets" / "base", rows), rows


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
