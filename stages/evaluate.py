"""Stage `evaluate`: strict GenEval of the trained EMA checkpoint and of the base, side by side.

For each model: sample the test prompts in GenEval's folder layout, score every image. Writes
<out>/<name>/{images,results.jsonl,summary.json}, <out>/scores.json (overall and per tag, trained
and base; a DVC metric), <out>/per_tag.csv (a DVC bar plot) and <out>/samples.png (the same test
prompts and seeds, base row above trained row). Reads params: evaluate, model, world, geneval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from elborl.config import EvaluateConfig
from elborl.evaluation import images_per_prompt_by_tag, sample_layout
from elborl.grid import image_grid
from elborl.io import atomic_write_text, save_png, write_json
from elborl.models.generate import generate, image_seed
from elborl.rewards.detectors import Detector
from elborl.rewards.geneval import Rules
from elborl.rewards.scoring import score_folder, write_scores


def score_model(model, rows: list[dict], detector: Detector, rules: Rules, cfg: EvaluateConfig, out: Path) -> dict:
    """Sample `rows` with a (frozen) policy into `out/images`, score them into `out/results.jsonl` and
    `out/summary.json`."""
    per_tag = images_per_prompt_by_tag(rows, cfg.images_per_prompt, cfg.min_images_per_tag)
    with torch.inference_mode():
        sample_layout(model, rows, out / "images", [per_tag[m["tag"]] for m in rows], cfg.seed,
                      sampler=cfg.sampler, steps=cfg.steps, shift=cfg.shift)  # fmt: skip
    results, summary = score_folder(out / "images", detector, rules)
    write_scores(out, results, summary)
    return summary


def scores_table(summaries: dict[str, dict]) -> dict:
    """{"trained": {"overall", per tag...}, "base": {...}, "gain": {...}}."""
    table = {name: {"overall": s["overall"], **s["per_tag"]} for name, s in summaries.items()}
    if {"trained", "base"} <= table.keys():
        table["gain"] = {k: table["trained"][k] - table["base"][k] for k in table["trained"]}
    return table


def per_tag_csv(table: dict) -> str:
    """tag,base,trained rows (overall first), for the `dvc plots` bar chart."""
    lines = ["tag,base,trained"]
    for tag in table["trained"]:
        lines.append(f"{tag},{table.get('base', {}).get(tag, float('nan')):.4f},{table['trained'][tag]:.4f}")
    return "\n".join(lines) + "\n"


def grid_images(model, rows: list[dict], cfg: EvaluateConfig) -> np.ndarray:
    """One model's block of the comparison grid: the same test prompts and seeds for every model,
    uint8 (n, H, W, 3)."""
    shown = rows[:: max(1, len(rows) // cfg.grid_prompts)][: cfg.grid_prompts]
    seeds = [image_seed(cfg.seed, i, 0) for i in range(len(shown))]
    with torch.inference_mode():
        return generate(model, [r["prompt"] for r in shown], seeds, cfg.sampler, cfg.steps, cfg.shift, progress=False)


def comparison_grid(blocks: list[np.ndarray]) -> np.ndarray:
    """The blocks of `grid_images`, one model per block, as one image."""
    n = len(blocks[0])
    return image_grid(np.concatenate(blocks), ncol=n if n <= 16 else 8)


def write_outputs(out: Path, table: dict, grid: np.ndarray) -> None:
    """scores.json (the DVC metric), per_tag.csv (the bar plots), samples.png (the grid)."""
    write_json(out / "scores.json", table)
    atomic_write_text(out / "per_tag.csv", per_tag_csv(table))
    save_png(out / "samples.png", grid)
