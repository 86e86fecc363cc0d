"""The design-space benchmark's report: summary.md (compute-to-target and the learning-rate sweep),
the score plots, and the runs read back from runs.csv / lr_sweep.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bench.compute_to_target import Curve, late_score, summarize_configs
from elborl.io import atomic_write_text


def rate_scores(rows: list[dict]) -> dict[float, float]:
    """Each swept rate's score: `late_score` of each of its runs (rows: evaluations after the start),
    averaged over the seeds it ran."""
    runs: dict[tuple[float, int], list[float]] = {}
    for r in rows:
        runs.setdefault((r["lr"], r["seed"]), []).append(r["score"])
    by_lr: dict[float, list[float]] = {}
    for (lr, _), scores in runs.items():
        by_lr.setdefault(lr, []).append(late_score(scores))
    return {lr: float(np.mean(v)) for lr, v in by_lr.items()}


def plot(rows: list[dict], out: Path, order: list[str]) -> None:
    """Median test GenEval over seeds vs training wall time and vs images, one line per configuration
    (coloured by its place in `order`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for x, fname in (("wall_s", "score_vs_time.png"), ("images", "score_vs_images.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name in dict.fromkeys(r["config"] for r in rows):
            color, runs = f"C{order.index(name)}", _by_seed(r for r in rows if r["config"] == name)
            for seed_rows in runs:
                ax.plot([r[x] for r in seed_rows], [r["score"] for r in seed_rows], alpha=0.25, color=color)
            ax.plot(*_median_curve(runs, x), label=name, color=color, lw=2)
        ax.set_xlabel("training wall time (s)" if x == "wall_s" else "generated training images")
        ax.set_ylabel("strict test GenEval (EMA)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)


def _by_seed(rows) -> list[list[dict]]:
    seeds: dict[int, list[dict]] = {}
    for r in rows:
        seeds.setdefault(r["seed"], []).append(r)
    return list(seeds.values())


def _median_curve(runs: list[list[dict]], x: str) -> tuple[list[float], list[float]]:
    n = min(len(r) for r in runs)  # evaluation points every run has
    return ([float(np.median([r[i][x] for r in runs])) for i in range(n)],
            [float(np.median([r[i]["score"] for r in runs])) for i in range(n)])  # fmt: skip


def read_rows(path: Path) -> list[dict]:
    """Rows of a runs.csv / lr_sweep.csv written by this benchmark, numbers parsed."""

    def value(k: str, v: str):
        if k == "config":
            return v
        return int(v) if k in ("seed", "epoch", "images") else float(v) if v else float("nan")

    try:
        with open(path, newline="") as f:
            return [{k: value(k, v) for k, v in row.items()} for row in csv.DictReader(f)]
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path}: expected a runs CSV of bench/design_space.py ({e})") from e


def write_summary(
    out: Path,
    header: str,
    all_rows: list[dict],
    sweep_rows: list[dict],
    chosen: dict,
    target: float,
    reference: str,
    order: list[str],
) -> None:
    """summary.md (compute-to-target table and the learning-rate sweep) and the plots, in `out`.

    Args:
        header: The summary's first lines (command, target, budget).
        all_rows: Every evaluation of the chosen runs; sweep_rows: of the sweep's runs.
        chosen: Rate per configuration.
        reference: The configuration the ratios divide by; order: configurations in plot-colour order.
    """
    names = list(dict.fromkeys(r["config"] for r in all_rows))
    curves = [Curve(r[0]["config"], r[0]["seed"], [(x["wall_s"], x["images"], x["score"]) for x in r])
              for name in names for r in _by_seed(x for x in all_rows if x["config"] == name)]  # fmt: skip
    table = summarize_configs(curves, target, reference)
    speed = {name: [float(np.median([r[k] for r in all_rows if r["config"] == name and r["epoch"] > 0]))
                    for k in ("rollout_img_s", "update_samples_s")] for name in names}  # fmt: skip
    md = [header, "",
          "| configuration | lr | reached | median s to target | x ref | median images to target | x ref | "
          "median best | median final | late mean (sd) | rollout img/s | update samples/s |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in table:
        name = row["config"]
        md.append(f"| {name} | {chosen[name]:g} | {row['reached']}/{row['runs']} | {row['time']} | {row['time_ratio']} "
                  f"| {row['images']} | {row['images_ratio']} | {row['best']:.3f} | {row['final']:.3f} "
                  f"| {row['late']:.3f} ({row['late_sd']:.3f}) "
                  f"| {speed[name][0]:.1f} | {speed[name][1]:.1f} |")  # fmt: skip
    md += ["", "Late mean: a run's mean test GenEval over the second half of its evaluations after the start, "
           "averaged over seeds (sd over seeds).", "",
           "Learning-rate sweep (the same late score, averaged over the seeds the rate ran):", "",
           "| configuration | lr | seeds | score | chosen |", "|---|---|---|---|---|"]  # fmt: skip
    for name in names:
        swept = [r for r in sweep_rows if r["config"] == name and r["epoch"] > 0]
        scores = rate_scores(swept)
        for lr in sorted(scores):
            n = len({r["seed"] for r in swept if r["lr"] == lr})
            md.append(f"| {name} | {lr:g} | {n} | {scores[lr]:.3f} | {'yes' if lr == chosen[name] else ''} |")
    text = "\n".join(md) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "summary.md", text)
    plot(all_rows, out, order)
    print(text)
