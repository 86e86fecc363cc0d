"""`dvc repro` for real, in a temporary copy of the repository."""

import json

import yaml

from tests.conftest import sh


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
    assert set(scores) == {"base", "base_cfg", "trained", "gain", "off_target"} and "position" in scores["trained"]
    assert scores["base_cfg"] != scores["base"]  # the base sampled with CFG 4.5: other images, other scores
    assert set(scores["off_target"]) == {"base", "base_cfg", "trained"}
    metrics = sh("dvc", "metrics", "show", cwd=clone)
    assert "trained.overall" in metrics and "reward_mean" in metrics
    plots = sh("dvc", "plots", "show", "--json", cwd=clone)
    assert ("reward" in plots and "per_tag.csv" in plots) or "per tag" in plots

    registry = sh("elborl", "compare", cwd=clone)  # evaluate registered the EMA model as the champion
    assert "version | champion | " in registry and "\n1 | * | " in registry

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
