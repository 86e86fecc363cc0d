"""`dvc repro` for real, in a temporary copy of the repository."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def sh(*args: str, cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", DVC_NO_ANALYTICS="1")
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture
def clone(tmp_path):
    """The repository's files (committed or not, minus ignored ones) in a fresh git repository."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()  # fmt: skip
    for name in files:
        if name.startswith("data/") or not (ROOT / name).is_file():
            continue
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    sh("git", "init", "-q", cwd=tmp_path)
    sh("git", "add", "-A", cwd=tmp_path)
    sh(
        "git",
        "-c",
        "user.email=t@t",
        "-c",
        "user.name=t",
        "commit",
        "-qam",
        "init",
        "--allow-empty",
        cwd=tmp_path,
    )
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["prompts"]["test_size"] = 12
    params["ceiling"]["images_per_prompt"] = 1
    params["base"].update(eval_min_images_per_tag=1, eval_steps=2)
    params["train"].update(epochs=2, prompts_per_epoch=2, group_size=2, steps=2, eval_every=1,
                           eval_min_images_per_tag=1)  # fmt: skip
    params["evaluate"].update(images_per_prompt=1, min_images_per_tag=1, steps=2, grid_prompts=4)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "small params", cwd=tmp_path)
    assert not (ROOT / "mlruns").exists()
    return tmp_path


def test_dvc_repro_runs_stages_then_skips_them(clone):
    out = sh("dvc", "repro", cwd=clone)
    for stage in ("prompts", "ceiling", "base", "train", "evaluate"):
        assert f"Running stage '{stage}'" in out
    assert "epoch 2/2: reward" in out  # one log line per epoch
    summary = json.loads((clone / "data" / "ceiling" / "summary.json").read_text())
    assert summary["overall"] == 1.0 and summary["n_images"] == len(
        (clone / "data" / "prompts" / "test.jsonl").read_text().splitlines()
    )
    scores = json.loads((clone / "data" / "eval" / "scores.json").read_text())
    assert set(scores) == {"base", "trained", "gain"} and "position" in scores["trained"]
    metrics = sh("dvc", "metrics", "show", cwd=clone)
    assert "trained.overall" in metrics and "reward_mean" in metrics
    plots = sh("dvc", "plots", "show", "--json", cwd=clone)
    assert ("reward" in plots and "per_tag.csv" in plots) or "per tag" in plots

    again = sh("dvc", "repro", cwd=clone)
    assert "Running stage" not in again
    assert "up to date" in sh("dvc", "status", cwd=clone)

    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["ceiling"]["seed"] = 1  # only the ceiling stage reads this section
    (clone / "params.yaml").write_text(yaml.safe_dump(params))
    out = sh("dvc", "repro", cwd=clone)
    assert "Running stage 'ceiling'" in out and "Running stage 'prompts'" not in out
    assert "Running stage 'train'" not in out

    sh("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "ran", cwd=clone)
    exp = sh("dvc", "exp", "run", "-S", "train.objective=pepg", cwd=clone)
    assert "Running stage 'train'" in exp and "Running stage 'evaluate'" in exp and "Running stage 'base'" not in exp
