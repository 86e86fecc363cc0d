"""The `train` stage: bitwise resume (in-process and after kill -9 of the real CLI), cached reruns,
checkpoints that are never read half-written."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from elborl import checkpoint
from elborl.config import Params, TrainConfig
from elborl.models.tiny import TinyT2I, tiny_policy
from elborl.rewards.detectors import build_detector
from elborl.train import Trainer
from elborl.world.prompts import make_prompt_sets
from stages.prompts import run_stage as write_prompts

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "assets" / "base"
SMALL_TRAIN = {"epochs": 4, "prompts_per_epoch": 2, "group_size": 2, "steps": 2, "eval_every": 2,
               "eval_min_images_per_tag": 1, "lr": 1e-4}  # fmt: skip


def _trainer(spec, rows) -> Trainer:
    cfg = TrainConfig(**{**SMALL_TRAIN, "epochs": 3})
    policy = tiny_policy(TinyT2I.from_pretrained(BASE), "full")
    return Trainer(policy, rows, build_detector("shapes", spec), cfg)


def _state(tr: Trainer) -> list[torch.Tensor]:
    weights = [*tr.policy.weights.state_dict("current").values(), *tr.policy.weights.state_dict("old").values()]
    return [t.clone() for t in weights] + [p.clone() for p in tr.ema.shadow_params]


def test_trainer_resumed_from_a_checkpoint_ends_bitwise_equal(spec, tmp_path):
    rows = make_prompt_sets(spec, Params().prompts)[0]
    straight = _trainer(spec, rows)
    metrics = [straight.epoch(e) for e in range(3)]
    assert any(m["reward_std"] > 0 for m in metrics)  # the run has a learning signal to resume

    first = _trainer(spec, rows)
    first.epoch(0)
    first.save(str(tmp_path / "ckpt"))
    resumed = _trainer(spec, rows)
    resumed.load(str(tmp_path / "ckpt"))
    for e in (1, 2):
        resumed.epoch(e)
    assert resumed.step == straight.step
    assert all(torch.equal(a, b) for a, b in zip(_state(straight), _state(resumed), strict=True))
    with pytest.raises(RuntimeError, match="epoch 1 asked"):
        _trainer(spec, rows).epoch(1)


def test_a_checkpoint_without_its_commit_mark_is_not_complete(spec, tmp_path):
    tr = _trainer(spec, make_prompt_sets(spec, Params().prompts)[0][:8])
    url = checkpoint.epoch_url(str(tmp_path), 1)
    tr.save(url)
    assert checkpoint.complete(url)
    (Path(url) / "state.json").unlink()  # as if killed before the last write
    assert not checkpoint.complete(url)
    checkpoint.prune(str(tmp_path), 2)
    assert not Path(url).exists()


def _project(root: Path, checkpoints: Path | str, endpoint: str | None = None, **train) -> Path:
    params = {"prompts": {"test_size": 12, "train_size": 40},
              "train": {**SMALL_TRAIN, "checkpoints": str(checkpoints), **train},
              "storage": {"endpoint_url": endpoint, "retries": 1, "connect_timeout": 2},
              "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}"}}  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    write_prompts(Params.model_validate(params), root / "prompts")
    return root


def _train_cmd(root: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "train", "--params", str(root / "params.yaml"), "--prompts",
            str(root / "prompts"), "--base", str(BASE), "--out", str(root / "out")]  # fmt: skip


def _history(path: Path) -> list[dict]:
    with path.open() as f:
        return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in csv.DictReader(f)]


def _env() -> dict:
    """The train CLI's environment (read after `prefect_api` has set PREFECT_API_URL)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def straight(tmp_path_factory, prefect_api) -> tuple[Path, dict]:
    """An uninterrupted 4-epoch run of the train CLI: the reference for the resume tests."""
    root = tmp_path_factory.mktemp("straight")
    project = _project(root / "project", root / "ckpt")
    subprocess.run(_train_cmd(project), check=True, env=_env(), cwd=ROOT, capture_output=True)
    return project, json.loads((project / "out" / "run.json").read_text())


def test_train_flow_killed_mid_run_resumes_to_the_same_final_checkpoint(tmp_path, straight):
    straight, expected = straight
    killed = _project(tmp_path / "killed", tmp_path / "ckpt_b")
    proc = subprocess.Popen(_train_cmd(killed), env=_env(), cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    second = tmp_path / "ckpt_b" / expected["run_key"] / "epoch_0002" / "state.json"
    deadline = time.time() + 300
    while not second.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and everything it started
    proc.wait()
    assert not (killed / "out" / "run.json").exists()

    done = subprocess.run(_train_cmd(killed), check=True, env=_env(), cwd=ROOT, capture_output=True, text=True)
    log = done.stdout + done.stderr
    assert "Task run 'epoch-0' - Finished in state Cached" in log  # finished epochs replayed from the cache
    assert "Task run 'epoch-3' - Finished in state Completed" in log
    resumed = json.loads((killed / "out" / "run.json").read_text())
    assert resumed["digest"] == expected["digest"]  # sha256 of every weight, optimizer and EMA tensor
    history = [_history(root / "out" / "history.csv") for root in (straight, killed)]
    assert len(history[0]) == 4 and history[0] == history[1]  # every epoch's metrics, timings aside
    weights = sorted((straight / "out" / "model").rglob("*.safetensors"))
    assert weights and all(w.read_bytes() == (killed / "out" / "model" / w.relative_to(straight / "out" / "model"))
                           .read_bytes() for w in weights)  # fmt: skip
    assert len(list((tmp_path / "ckpt_b" / expected["run_key"]).glob("epoch_*"))) == 2  # keep_checkpoints


def test_train_on_s3_resumes_from_s3_on_a_fresh_machine(tmp_path, straight, s3_server):
    """Checkpoints and cached epoch results on s3://: a 2-epoch run, then a 4-epoch run from a fresh
    project folder (nothing local) that replays epochs 1-2 from S3 and ends on the straight run's weights."""
    _, expected = straight
    endpoint, env = s3_server
    env = {**env, "PREFECT_API_URL": os.environ["PREFECT_API_URL"]}  # set by `straight`'s `prefect_api`
    first = _project(tmp_path / "first", "s3://elborl/ckpt", endpoint, epochs=2)
    subprocess.run(_train_cmd(first), check=True, env=env, cwd=ROOT, capture_output=True)
    fresh = _project(tmp_path / "fresh", "s3://elborl/ckpt", endpoint)
    done = subprocess.run(_train_cmd(fresh), check=True, env=env, cwd=ROOT, capture_output=True, text=True)
    log = done.stdout + done.stderr
    assert "Task run 'epoch-1' - Finished in state Cached" in log
    assert "Task run 'epoch-2' - Finished in state Completed" in log
    run = json.loads((fresh / "out" / "run.json").read_text())
    assert run["checkpoint"].startswith("s3://elborl/ckpt/") and run["digest"] == expected["digest"]


def test_unreachable_s3_fails_before_any_work(tmp_path):
    project = _project(tmp_path / "p", "s3://elborl/ckpt", "http://127.0.0.1:9")
    secret = "sk-test-SECRET-123"  # a recognisable fake secret: it must never be printed
    env = {**_env(), "AWS_ACCESS_KEY_ID": "AKIA-ID", "AWS_SECRET_ACCESS_KEY": secret}
    done = subprocess.run(_train_cmd(project), env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and secret not in done.stdout + done.stderr
    assert "error: s3://elborl/ckpt" in done.stderr and "cannot reach the storage at http://127.0.0.1:9" in done.stderr
    assert not (project / "out").exists()


def test_bad_params_stop_the_train_stage_before_any_work(cli, tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("train:\n  objectve: pepg\n")
    code, _, err = cli("train", "--params", bad, "--out", tmp_path / "out")
    assert code == 2 and "params.yaml: train.objectve: unknown key (did you mean 'objective'?)" in err
    assert not (tmp_path / "out").exists()
    code, _, err = cli("train", "--prompts", tmp_path / "nowhere", "--out", tmp_path / "out")
    assert code == 2 and "nowhere/train.jsonl: not found" in err


class _Planted:
    """Unpickling this touches a marker file: what a poisoned cache would run on a resuming machine."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (self.marker.touch, ())


def test_a_pickle_planted_in_the_result_cache_is_refused_not_executed(tmp_path, straight):
    import base64
    import pickle
    import shutil

    project, expected = straight
    root = Path(yaml.safe_load((project / "params.yaml").read_text())["train"]["checkpoints"]) / expected["run_key"]
    results = sorted((root / "results").iterdir())
    assert results and all(json.loads(r.read_text())["metadata"]["serializer"]["type"] == "elborl-json"
                           for r in results)  # fmt: skip
    poisoned = _project(tmp_path / "poisoned", tmp_path / "ckpt")
    shutil.copytree(root, tmp_path / "ckpt" / expected["run_key"])
    first = tmp_path / "ckpt" / expected["run_key"] / "results" / results[0].name
    record = json.loads(first.read_text())
    marker = tmp_path / "pwned"
    record["metadata"]["serializer"] = {"type": "pickle", "picklelib": "pickle"}
    record["result"] = base64.b64encode(pickle.dumps(_Planted(marker))).decode()
    first.write_text(json.dumps(record))
    done = subprocess.run(_train_cmd(poisoned), env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and not marker.exists()
    assert f"error: {first}: a cached epoch result elborl did not write as JSON ('pickle'); refused" in done.stderr
    first.write_bytes(pickle.dumps({"epoch": 0}))  # not even a JSON record
    done = subprocess.run(_train_cmd(poisoned), env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2 and "not a JSON result record" in done.stderr


def test_a_deleted_checkpoint_costs_one_epoch_not_the_run(tmp_path, straight):
    """After a CorruptCheckpoint the user deletes that folder: the rerun replays the cached epochs before it
    and recomputes only the one that wrote it (from the previous checkpoint), ending on the same digest."""
    import shutil

    _, expected = straight
    project = _project(tmp_path / "p", tmp_path / "ckpt")
    subprocess.run(_train_cmd(project), check=True, env=_env(), cwd=ROOT, capture_output=True)
    shutil.rmtree(tmp_path / "ckpt" / expected["run_key"] / "epoch_0004")  # the newest of the two kept
    done = subprocess.run(_train_cmd(project), check=True, env=_env(), cwd=ROOT, capture_output=True, text=True)
    log = done.stdout + done.stderr
    assert "recomputing from epoch 4" in log and "Task run 'epoch-2' - Finished in state Cached" in log
    assert "Task run 'epoch-3' - Finished in state Completed" in log
    assert "epoch-0' - Finished in state Completed" not in log
    assert json.loads((project / "out" / "run.json").read_text())["digest"] == expected["digest"]
