"""Stage `ceiling`: render ground truth for the test prompts and score it with the detector.

What a perfect generator would score: the ceiling of every evaluation and a standing check that the
detector reads the world. Reads params: world, geneval, ceiling. Writes: <out>/images (GenEval
layout), <out>/results.jsonl, <out>/summary.json (a DVC metric).
"""

from __future__ import annotations

from pathlib import Path

from elborl.config import CeilingConfig, Params
from elborl.geneval_io import read_metadata_jsonl, write_layout
from elborl.rewards.detectors import Detector, build_detector
from elborl.rewards.geneval import Rules
from elborl.rewards.scoring import score_folder, write_scores
from elborl.world.render import render_images
from elborl.world.spec import WorldSpec


def run(
    test: list[dict], spec: WorldSpec, detector: Detector, rules: Rules, cfg: CeilingConfig, out: Path
) -> tuple[list[dict], dict]:
    """Render `cfg.images_per_prompt` images per test prompt under `out/images`, then score them."""
    n = cfg.images_per_prompt
    write_layout(out / "images", test, n, lambda i, m: render_images(m, spec, n, cfg.seed, i))
    return score_folder(out / "images", detector, rules)


def run_stage(
    params: Params, prompts: str | Path = "data/prompts/test.jsonl", out: str | Path = "data/ceiling"
) -> dict:
    """File I/O around `run`; prints and returns the summary."""
    spec = WorldSpec.from_config(params.world)
    detector = build_detector(params.geneval.detector, spec, params.geneval)
    out = Path(out)
    rows, summary = run(read_metadata_jsonl(prompts), spec, detector, Rules.from_config(params.geneval),
                        params.ceiling, out)  # fmt: skip
    write_scores(out, rows, summary)
    tags = ", ".join(f"{t} {s:.3f}" for t, s in summary["per_tag"].items())
    print(f"ceiling: overall {summary['overall']:.3f} on {summary['n_images']} images ({tags})")
    return summary
