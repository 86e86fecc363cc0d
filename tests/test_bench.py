"""The design-space benchmark: compute-to-target arithmetic, and `--quick` runs every configuration
end to end (the machinery; the science is in bench/results/README.md)."""

from __future__ import annotations

import csv
import math
from contextlib import contextmanager

import psutil
import pytest

from bench.compute_to_target import Curve, first_reach, summarize_configs
from bench.design_space import CONFIGS, InlineExecutor, main
from bench.report import rate_scores


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
    assert rows["ref"]["late"] == 0.5 and rows["ref"]["late_sd"] == 0.0  # the evaluations after the start
    assert rows["slow"]["time"] == "80" and rows["slow"]["time_ratio"] == "4.00"
    assert rows["slow"]["images"] == "400" and rows["slow"]["images_ratio"] == "2.00"
    assert rows["never"]["reached"] == 1 and rows["never"]["time"] == "not reached"
    assert rows["never"]["time_ratio"] == "never" and rows["never"]["best"] == 0.3
    # a target the base already meets gives no ratio (not a division by zero)
    assert summarize_configs(ref, 0.1, "ref")[0]["time_ratio"].startswith("n/a")


def _children() -> set[int]:
    """This process's descendants, less multiprocessing's resource tracker (one per process, by design)."""
    return {p.pid for p in psutil.Process().children(recursive=True) if "resource_tracker" not in " ".join(p.cmdline())}


def test_quick_mode_runs_every_configuration(tmp_path, monkeypatch):
    import bench.design_space as ds

    executors = []
    make_executor = ds.make_executor

    @contextmanager
    def spy(*args):
        with make_executor(*args) as executor:
            executors.append(type(executor).__name__)
            yield executor

    monkeypatch.setattr(ds, "make_executor", spy)
    before = _children()
    main(["--quick", "--jobs", "2", "--out", str(tmp_path)])  # a local Dask cluster: two spawned worker processes
    assert executors == ["ClientExecutor"]  # distributed's concurrent.futures interface
    assert _children() <= before  # the cluster closed: no scheduler, nanny or worker process left
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
    # the same runs summarized again at another target, running nothing
    main(["--from-runs", str(tmp_path), "--target", "0.0", "--out", str(tmp_path / "again")])
    again = (tmp_path / "again" / "summary.md").read_text()
    assert f"the runs of {tmp_path}" in again and "Target: strict test GenEval >= 0.0" in again
    assert again.count("| 1/1 | 0 |") == len(CONFIGS)  # every run's base evaluation reaches 0.0: at 0 s


def test_set_overrides_train_params_in_every_run(tmp_path):
    main(["--quick", "--configs", "elbo/epg/dpm2", "--set", "group_size=3", "--set", "lr=3e-5", "--out", str(tmp_path)])
    with (tmp_path / "runs.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    assert int(last["images"]) == 2 * 3 and float(last["lr"]) == 3e-5  # 2 prompts x the new group size
    with pytest.raises(SystemExit):
        main(["--quick", "--set", "group_size", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--quick", "--lr", "nft=1e-4", "--out", str(tmp_path)])


def _fake_run(name, lr, seed, args, *data):
    """A run whose late score is its rate (so the larger rate wins a sweep), seed in the last digit."""
    return [{"config": name, "lr": lr, "seed": seed, "epoch": e, "score": lr * e + seed / 1000} for e in (0, 1, 2)]


@pytest.mark.parametrize("eager", [False, True])
def test_run_all_sweeps_then_runs_every_seed_of_the_chosen_rate(monkeypatch, eager):
    import argparse

    import bench.design_space as ds

    monkeypatch.setattr(ds, "run", _fake_run)
    args = argparse.Namespace(seeds=3, eager=eager, no_sweep=False, train={}, rate={})
    saved = []
    names = ["nft/dpm2", "elbo/epg/dpm2"]
    sweep, rows, chosen = ds.run_all(names, args, InlineExecutor(), (), lambda *a: saved.append(a))
    assert chosen == {"nft/dpm2": 1e-4, "elbo/epg/dpm2": ds.LRS["elbo/epg/dpm2"][0]}
    # chosen runs: configuration order, then seed; every seed once
    assert [(r["config"], r["seed"]) for r in rows if r["epoch"] == 0] == [(n, s) for n in names for s in range(3)]
    assert all(r["lr"] == chosen[r["config"]] for r in rows)
    # the sweep: both rates of nft (every seed when eager, seed 0 otherwise), seed 0 of the single-rate one
    nft = {(r["lr"], r["seed"]) for r in sweep if r["config"] == "nft/dpm2"}
    assert nft == {(lr, s) for lr in (2e-5, 1e-4) for s in ((0, 1, 2) if eager else (0,))} | {(1e-4, 1), (1e-4, 2)}
    assert {r["seed"] for r in sweep if r["config"] == "elbo/epg/dpm2"} == {0}
    assert saved and saved[-1] == (sweep, rows)


def test_rate_scores_average_each_seeds_late_score():
    rows = [{"lr": 1.0, "seed": s, "score": v} for s, vs in ((0, [0.0, 0.2, 0.4]), (1, [0.0, 0.0, 0.6])) for v in vs]
    assert rate_scores(rows) == pytest.approx({1.0: 0.3})


def test_lr_fixes_one_configurations_rate(monkeypatch):
    import argparse

    import bench.design_space as ds

    monkeypatch.setattr(ds, "run", _fake_run)
    args = argparse.Namespace(seeds=2, eager=False, no_sweep=False, train={}, rate={"nft/dpm2": 3e-5})
    sweep, rows, chosen = ds.run_all(["nft/dpm2"], args, InlineExecutor(), (), lambda *a: None)
    assert chosen == {"nft/dpm2": 3e-5} and {r["lr"] for r in sweep + rows} == {3e-5}


def test_a_scheduler_without_run_slots_is_refused_at_once():
    from bench.design_space import check_workers

    check_workers({"tcp://w:1": {"resources": {"run": 1, "GPU": 1}}}, "tcp://s:8786")
    with pytest.raises(SystemExit, match="no worker with the resource run=1"):  # they would wait forever
        check_workers({"tcp://w:1": {"resources": {}}, "tcp://w:2": {}}, "tcp://s:8786")


def test_long_horizon_resumes_with_cumulative_time_and_off_target_columns(tmp_path):
    from bench import long_horizon

    out = tmp_path / "lh"
    tiny = ["--set", "prompts_per_epoch=2", "--set", "group_size=2", "--set", "steps=2", "--set", "optimizer_steps=1",
            "--set", f'checkpoints="{tmp_path / "ckpt"}"', "--eval-every", "1", "--out", str(out)]  # fmt: skip
    long_horizon.main(["--epochs", "1", *tiny])
    long_horizon.main(["--epochs", "2", *tiny])  # resumes after epoch 1: one more epoch, one more row
    with (out / "curve.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    t = [float(r["train_s"]) for r in rows]
    assert t[0] == 0 < t[1] < t[2]  # the resumed run goes on from epoch 1's time, not from 0
    for r in rows:
        assert 0 <= float(r["nocfg.overall"]) <= 1 and 0 <= float(r["cfg.position"]) <= 1
        assert 0 <= float(r["nocfg.border_objects"]) <= 1 and float(r["cfg.pixel_std"]) > 0
    assert (out / "model").is_dir()
