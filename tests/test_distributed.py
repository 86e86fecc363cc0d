"""The update on N ranks (accelerate launch, DDP over gloo on 2 CPU processes) equals the one-rank
update; the train CLI on 2 ranks resumes after a kill to the same weights; shards of a rollout equal
the unsharded rollout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from safetensors.torch import load_file

from elborl.config import Params, TrainConfig
from elborl.distributed import Ranks
from elborl.models.tiny import TinyT2I, tiny_policy
from elborl.rollout import rollout
from elborl.world.prompts import make_prompt_sets
from stages.prompts import run_stage as write_prompts

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LAUNCH = [str(BIN / "accelerate"), "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "ddp.yaml"),
          "--num_processes", "2"]  # fmt: skip


def _env() -> dict:
    # gloo on CPUs; `accelerate launch --cpu` would start one process only
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_shards_split_every_optimizer_step_evenly_over_the_ranks():
    shards = [Ranks(r, 2).shard(12, 2) for r in range(2)]
    assert shards[0].tolist() == [0, 1, 2, 6, 7, 8] and shards[1].tolist() == [3, 4, 5, 9, 10, 11]
    with pytest.raises(ValueError, match=r"train.prompts_per_epoch x train.group_size a multiple of 8"):
        Ranks(0, 2).shard(12, 4)
    values = torch.tensor([5.0, 6.0, 7.0])
    assert Ranks().gather(values, torch.tensor([2, 0, 1]), 3).tolist() == [6.0, 7.0, 5.0]


@pytest.mark.parametrize("sampler", ["dpm2", "flow_sde"])
def test_rollout_shards_equal_the_whole_rollout(spec, sampler):
    """Per-sample noise and SDE generators: any split of the batch samples the same images."""
    cfg = TrainConfig(prompts_per_epoch=2, group_size=3, steps=3, sampler=sampler, optimizer_steps=1)
    policy = tiny_policy(TinyT2I.from_pretrained(ROOT / "assets" / "base"), "full")
    rows = make_prompt_sets(spec, Params().prompts)[0]
    whole = rollout(policy, rows, cfg, epoch=3)
    parts = [rollout(policy, rows, cfg, 3, Ranks(r, 2)) for r in range(2)]
    assert [p.index.tolist() for p in parts] == [[0, 1, 2], [3, 4, 5]] and parts[1].size == 6
    x0 = torch.cat([p.x0 for p in parts])
    torch.testing.assert_close(x0, whole.x0, rtol=1e-4, atol=1e-5)  # batch size changes the matmul kernels only
    assert [m["prompt"] for p in parts for m in p.metadata] == whole.prompts
    assert torch.equal(torch.cat([p.groups for p in parts]), whole.groups)


def test_one_update_on_two_ranks_equals_the_one_rank_update(tmp_path):
    script = str(ROOT / "tests" / "helpers" / "ddp_update.py")
    subprocess.run([sys.executable, script, str(tmp_path / "one")], check=True, env=_env(), capture_output=True)
    done = subprocess.run([*LAUNCH, script, str(tmp_path / "two")], env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    assert two["world"] == 2 and two["images"] == one["images"] == 12
    groups = load_file(tmp_path / "two" / "adv.safetensors")["groups"]
    assert set(groups[two["shard0"]].tolist()) & set(groups[[i for i in range(12) if i not in two["shard0"]]].tolist())
    adv = [load_file(tmp_path / d / "adv.safetensors")["adv"] for d in ("one", "two")]
    assert torch.equal(*adv) and adv[0].abs().sum() > 0  # a group spans both ranks; advantages identical
    for key in ("reward_mean", "strict", "grad_norm"):
        assert two[key] == pytest.approx(one[key], rel=1e-6)
    weights = [load_file(tmp_path / d / "weights.safetensors") for d in ("one", "two")]
    # lr 1e-3: Adam's first step moves every weight by ~1e-3, and a wrong shard or average by as much; the
    # two updates agree to float32 rounding, which Adam amplifies where a weight's gradient sits at its eps
    # (1e-8: the KL term's rounding-level gradient there moves the step by up to ~1e-5 at beta_kl 1e-3)
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=5e-5)


def _project(root: Path) -> Path:
    params = {"prompts": {"test_size": 12, "train_size": 40},
              # epoch 2's test evaluation (rank 0, ~300 images) holds the run long enough to be killed in it
              "train": {"epochs": 2, "prompts_per_epoch": 2, "group_size": 2, "steps": 2, "eval_every": 2,
                        "eval_min_images_per_tag": 48, "lr": 1e-4, "optimizer_steps": 2,
                        "checkpoints": str(root / "ckpt")},
              "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}"}}  # fmt: skip
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    write_prompts(Params.model_validate(params), root / "prompts")
    return root


def _train(root: Path) -> list[str]:
    return [*LAUNCH, "-m", "pipeline.cli", "train", "--params", str(root / "params.yaml"), "--prompts",
            str(root / "prompts"), "--base", str(ROOT / "assets" / "base"), "--out", str(root / "out")]  # fmt: skip


def test_train_on_two_ranks_killed_and_rerun_ends_on_the_uninterrupted_weights(tmp_path, prefect_api):
    straight = _project(tmp_path / "straight")
    done = subprocess.run(_train(straight), env=_env(), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "update on 2 ranks" in done.stdout + done.stderr
    expected = json.loads((straight / "out" / "run.json").read_text())

    killed = _project(tmp_path / "killed")
    proc = subprocess.Popen(_train(killed), env=_env(), cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    results = killed / "ckpt" / expected["run_key"] / "results"
    deadline = time.time() + 300
    while not list(results.glob("*epoch0000*")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    # the launcher and both ranks (torch's launcher starts each rank in a session of its own)
    for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]:
        p.kill()
    proc.wait()
    psutil.wait_procs(psutil.Process().children(recursive=True), timeout=0)
    assert not (killed / "out" / "run.json").exists()

    done = subprocess.run(_train(killed), env=_env(), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "Task run 'epoch-0' - Finished in state Cached" in log  # rank 0 replays it, the other rank loads
    assert "Task run 'epoch-1' - Finished in state Completed" in log
    resumed = json.loads((killed / "out" / "run.json").read_text())
    assert resumed["digest"] == expected["digest"]  # every weight, optimizer and EMA tensor
