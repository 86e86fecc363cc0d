"""Rollouts and rewards as shard tasks on a 2-worker Dask LocalCluster (through Prefect's DaskTaskRunner,
against the suite's real Prefect server) equal the in-process epoch: rewards exactly, samples allclose."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner

from elborl.config import Params, route_overrides
from elborl.errors import UserError
from elborl.rollout import reward, rollout
from elborl.world.prompts import make_prompt_sets
from elborl.world.spec import WorldSpec
from pipeline.shards import Shards
from stages.train import build_trainer, folder_digest

BASE = str(Path(__file__).resolve().parents[1] / "assets" / "base")
TRAIN = {"prompts_per_epoch": 2, "group_size": 3, "steps": 3, "optimizer_steps": 1, "lr": 1e-3, "elbo_k": 2}


@flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True}))
def sharded(params: Params, rows: list[dict], calls: list[tuple]) -> list:
    shards = Shards(params, BASE, rows, torch.device("cpu"))
    out = []
    for epoch, url, digest in calls:
        try:
            out.append(shards(epoch, url, digest))
        except Exception as err:  # the test checks which
            out.append(err)
    return out


def _same(a, b) -> None:
    assert a.prompts == b.prompts and torch.equal(a.groups, b.groups) and a.size == b.size
    assert torch.equal(a.rewards, b.rewards) and torch.equal(a.correct, b.correct)  # exactly
    assert a.components == pytest.approx(b.components)
    torch.testing.assert_close(a.x0, b.x0, rtol=1e-4, atol=1e-5)  # batch size changes the matmul kernels only


def test_sharded_epochs_equal_in_process_epochs(tmp_path, prefect_api):
    params = Params.model_validate({**route_overrides(TRAIN), "runner": {"kind": "dask", "n_workers": 2}})
    rows = make_prompt_sets(WorldSpec.from_config(params.world), params.prompts)[0]
    trainer = build_trainer(params, BASE, rows)
    expected = [reward(rollout(trainer.policy, rows, params.train, 0), trainer.reward)]
    trainer.epoch(0)  # the sampling weights move: epoch 1 samples from its checkpoint
    digest = trainer.save(str(tmp_path / "epoch_0001"))
    expected.append(reward(rollout(trainer.policy, rows, params.train, 1), trainer.reward))

    base = (0, None, folder_digest(BASE))
    calls = [base, (1, str(tmp_path / "epoch_0001"), digest), (1, str(tmp_path / "epoch_0001"), "0" * 16)]
    with temporary_settings({PREFECT_API_URL: prefect_api}):  # settings were read before the fixture set the env
        got = sharded(params, rows, calls)
    _same(got[0], expected[0])
    _same(got[1], expected[1])
    assert not torch.equal(got[0].x0, got[1].x0)  # the workers loaded the checkpoint's weights
    assert isinstance(got[2], UserError) and "expected 0000000000000000" in str(got[2])
