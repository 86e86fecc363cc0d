"""Compute-to-target (docs/ARCHITECTURE.md section 6): when does each run first reach a score, and how do
configurations compare to the reference by their medians over seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Curve:
    """One run's evaluations: (training wall seconds, generated images, score) in time order."""

    config: str
    seed: int
    points: list[tuple[float, float, float]]


def first_reach(curve: Curve, target: float) -> tuple[float, float]:
    """(wall seconds, images) at the first evaluation scoring >= target; (inf, inf) if none does."""
    for wall, images, score in curve.points:
        if score >= target:
            return wall, images
    return math.inf, math.inf


def median_or_inf(values: list[float]) -> float:
    """Median over seeds where a run that never reached counts as infinitely slow: the median is finite
    only when at least half the runs (rounding up the middle) reached the target."""
    return float(np.median(values)) if values else math.inf


def _fmt(x: float, digits: int = 0) -> str:
    return "not reached" if math.isinf(x) else f"{x:.{digits}f}"


def late_score(scores: list[float]) -> float:
    """The mean score over the second half of a run's evaluations (after the start): where it settled,
    less noisy than any one evaluation."""
    return float(np.mean(scores[len(scores) // 2 :])) if scores else float("nan")


def summarize_configs(curves: list[Curve], target: float, reference: str) -> list[dict]:
    """Per configuration: runs, runs that reached, median time and images to target and their ratios to
    the reference's medians, the median best and final scores, and the mean and sd over runs of
    `late_score` (evaluations after the start).

    Args:
        curves: Every run's curve.
        target: Score to reach.
        reference: Configuration the ratios divide by.
    """
    by_config: dict[str, list[Curve]] = {}
    for c in curves:
        by_config.setdefault(c.config, []).append(c)
    medians = {}
    for name, cs in by_config.items():
        reach = [first_reach(c, target) for c in cs]
        medians[name] = (median_or_inf([r[0] for r in reach]), median_or_inf([r[1] for r in reach]),
                         sum(math.isfinite(r[0]) for r in reach))  # fmt: skip
    ref_time, ref_images, _ = medians.get(reference, (math.inf, math.inf, 0))
    rows = []
    for name, cs in by_config.items():
        time, images, reached = medians[name]
        rows.append({
            "config": name, "runs": len(cs), "reached": reached,
            "time": _fmt(time), "images": _fmt(images),
            "time_ratio": _ratio(time, ref_time), "images_ratio": _ratio(images, ref_images),
            "best": float(np.median([max(p[2] for p in c.points) for c in cs])),
            "final": float(np.median([c.points[-1][2] for c in cs])),
            "late": float(np.mean(late := [late_score([p[2] for p in c.points[1:]]) for c in cs])),
            "late_sd": float(np.std(late, ddof=1)) if len(late) > 1 else float("nan"),
        })  # fmt: skip
    return rows


def _ratio(x: float, ref: float) -> str:
    if math.isinf(ref):
        return "n/a (reference did not reach)"
    if ref == 0:
        return "n/a (the base already reaches it)"
    return "never" if math.isinf(x) else f"{x / ref:.2f}"
