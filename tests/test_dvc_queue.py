"""A sweep through DVC's experiment queue, for real, in a temporary copy of the repository: two points queued
with one grid `-S`, run by dvc-task's celery worker in temporary copies of the repository
(`.dvc/tmp/exps`), their params and metrics read back with `dvc exp show --json`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import psutil
import pytest
import yaml

from tests.conftest import project_env, sh

GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def _processes_in(root: Path) -> list[psutil.Process]:
    """Processes whose working directory lies in `root`: the queue worker and the stages it runs."""
    found = []
    for p in psutil.process_iter():
        try:
            if Path(p.cwd()).is_relative_to(root):
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def _stop_queue(root: Path) -> None:
    """`dvc queue stop --kill`, then whatever still runs in `root` ends (killed after 30 s)."""
    subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=root, env=project_env(), capture_output=True, timeout=120)
    deadline = time.time() + 30
    while _processes_in(root) and time.time() < deadline:
        time.sleep(1)
    for p in _processes_in(root):
        p.kill()


def _experiments(shown: list[dict]) -> list[dict]:
    """`dvc exp show --json` -> one {"name", "params" (params.yaml), "metrics" (data/train/metrics.json)} per
    experiment (the workspace and the baseline commit left out)."""
    out = []
    for commit in shown:
        for exp in commit.get("experiments") or []:
            for rev in exp["revs"]:
                data = rev["data"]
                out.append({
                    "name": rev.get("name") or exp.get("name"),
                    "params": data["params"]["params.yaml"]["data"],
                    "metrics": (data.get("metrics") or {}).get("data/train/metrics.json", {}).get("data"),
                })  # fmt: skip
    return out


@pytest.mark.slow
def test_queued_sweep_runs_each_point_and_reports_its_metrics(clone):
    params = yaml.safe_load((clone / "params.yaml").read_text())
    # Queued runs execute in temporary copies of the repository, deleted afterwards: what must outlive them is
    # absolute (the MLflow store, the checkpoint root; PREFECT_API_URL comes from the `prefect_api` fixture).
    params["tracking"]["uri"] = f"sqlite:///{clone / 'mlflow.db'}"
    params["train"].update(epochs=1, checkpoints=str(clone / "build" / "checkpoints"))
    (clone / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run([*GIT, "commit", "-qam", "absolute paths for queued runs"], cwd=clone, check=True)

    queued = sh("dvc", "exp", "run", "--queue", "-S", "train.seed=1,2", "train", cwd=clone)  # a grid: 2 points
    assert queued.count("Queued experiment") == 2, queued
    try:
        ran = sh("dvc", "exp", "run", "--run-all", "-j", "1", cwd=clone)  # starts the worker, blocks until done
    finally:
        _stop_queue(clone)
    assert not _processes_in(clone)  # no celery worker, no stage left running
    assert "Failed to reproduce" not in ran, ran  # (--run-all exits 0 even then)
    assert ran.count("Running stage 'train'") == 2, ran

    exps = _experiments(json.loads(sh("dvc", "exp", "show", "--json", cwd=clone)))
    assert sorted(e["params"]["train"]["seed"] for e in exps) == [1, 2], exps
    for e in exps:
        assert e["params"]["train"]["lr"] == params["train"]["lr"]  # only the swept key differs
        assert e["metrics"]["epoch"] == 0 and 0 <= e["metrics"]["reward_mean"] <= 1, e  # one epoch, counted from 0
    # what outlives the temporary copies: one MLflow run per point in the absolute store, their checkpoints
    with closing(sqlite3.connect(clone / "mlflow.db")) as db:
        seeds = sorted(v for (v,) in db.execute("SELECT value FROM params WHERE key = 'train.seed'"))
    assert seeds == ["1", "2"]
    assert len(list((clone / "build" / "checkpoints").iterdir())) == 2  # one run key per point
    assert not list((clone / ".dvc" / "tmp" / "exps").glob("tmp*"))  # the temporary copies are gone
