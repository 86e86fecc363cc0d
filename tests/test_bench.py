"""The design-space benchmark: compute-to-target arithmetic, and `--quick` runs every configuration
end to end (the machinery; the science is in bench/results/README.md)."""

from __future__ import annotations

import csv
import math

import pytest

from bench.compute_to_target import Curve, first_reach, summarize_configs
from bench.design_space import CONFIGS, main


def test_first_reach_takes_the_first_evaluation_at_or_above_the_target():
    c = Curve("a", 0, [(0, 0, 0.2), (10, 100, 0.29), (20, 200, 0.31), (30, 300, 0.25), (40, 400, 0.4)])
    assert first_reach(c, 0.3) == (20, 200)
    assert first_reach(c, 0.2) == (0, 0)
    assert first_reach(c, 0.5) == (math.inf, math.inf)


def test_medians_and_ratios_to_the_reference():
    ref = [Curve("ref", s, [(0, 0, 0.2), (t, 10 * t, 0.5)]) for s, t in enumerate([10, 20, 30])]
    slow = [Curve("slow", s, [(0, 0, 0.2), (t, 5 * t, 0.5)]) for s, t in enumerate([40, 80, 100])]
    # two of three never reach: the median is "not reached"
    never = [Curve("never", 0, [(0, 0, 0.2), (50, 500, 0.6)])]
    never += [Curve("never", s, [(0, 0, 0.2), (50, 500, 0.3)]) for s in (1, 2)]
    rows = {r["config"]: r for r in summarize_configs(ref + slow + never, 0.45, "ref")}
    assert rows["ref"]["time"] == "20" and rows["ref"]["time_ratio"] == "1.00"
    assert rows["slow"]["time"] == "80" and rows["slow"]["time_ratio"] == "4.00"
    assert rows["slow"]["images"] == "400" and rows["slow"]["images_ratio"] == "2.00"
    assert rows["never"]["reached"] == 1 and rows["never"]["time"] == "not reached"
    assert rows["never"]["time_ratio"] == "never" and rows["never"]["best"] == 0.3
    # a target the base already meets gives no ratio (not a division by zero)
    assert summarize_configs(ref, 0.1, "ref")[0]["time_ratio"].startswith("n/a")


def test_quick_mode_runs_every_configuration(tmp_path):
    main(["--quick", "--out", str(tmp_path)])
    with (tmp_path / "runs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["config"] for r in rows} == set(CONFIGS)
    for name in CONFIGS:  # the base's evaluation, then one after the epoch
        runs = [r for r in rows if r["config"] == name]
        assert [int(r["epoch"]) for r in runs] == [0, 1]
        assert int(runs[1]["images"]) == 4 and float(runs[1]["wall_s"]) > 0
        assert 0 <= float(runs[1]["score"]) <= 1 and float(runs[1]["background_drift"]) >= 0
    summary = (tmp_path / "summary.md").read_text()
    assert all(f"| {name} |" in summary for name in CONFIGS)
    assert (tmp_path / "score_vs_time.png").stat().st_size > 0 and (tmp_path / "score_vs_images.png").exists()


def test_set_overrides_train_params_in_every_run(tmp_path):
    main(["--quick", "--configs", "elbo/epg/dpm2", "--set", "group_size=3", "--set", "lr=3e-5", "--out", str(tmp_path)])
    with (tmp_path / "runs.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    assert int(last["images"]) == 2 * 3 and float(last["lr"]) == 3e-5  # 2 prompts x the new group size
    with pytest.raises(SystemExit):
        main(["--quick", "--set", "group_size", "--out", str(tmp_path)])
