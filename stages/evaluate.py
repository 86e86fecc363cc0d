"""Stage `evaluate`: strict GenEval of the trained EMA checkpoint (no CFG), of the base (no CFG) and of
the base WITH CFG (`evaluate.base_cfg_scale`), side by side: the study's comparison in the user's run.

For each model: sample the test prompts in GenEval's folder layout, score every image. Writes
<out>/<name>/{images,results.jsonl,summary.json}, <out>/scores.json (overall and per tag for trained,
base and base_cfg, the off-target checks of each, and the means of the `evaluate.rewards` on the same
images; a DVC metric), <out>/per_tag.csv and <out>/rewards.csv (DVC bar plots) and <out>/samples.png
(the same test prompts and seeds, one row block per model). Reads params: evaluate, model, world, geneval.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from elborl.config import EvaluateConfig
from elborl.evaluation import images_per_prompt_by_tag, off_target, sample_layout
from elborl.geneval_io import geneval_rows, iter_layout, load_image
from elborl.grid import image_grid
from elborl.io import atomic_write_text, save_png, write_json
from elborl.models.generate import generate, image_seed
from elborl.rewards.detectors import Detector
from elborl.rewards.geneval import Rules
from elborl.rewards.registry import RewardMix
from elborl.rewards.scoring import score_folder, write_scores


def score_model(model, rows: list[dict], detector: Detector, rules: Rules, cfg: EvaluateConfig,
                out: Path, cfg_scale: float = 1.0) -> dict | None:  # fmt: skip
    """Sample `rows` with a (frozen) policy into `out/images` (CFG at `cfg_scale`; 1.0 = off), score the
    GenEval ones into `out/results.jsonl` and `out/summary.json` (None when no prompt is a GenEval one,
    e.g. ocr prompts)."""
    per_tag = images_per_prompt_by_tag(rows, cfg.images_per_prompt, cfg.min_images_per_tag)
    with torch.inference_mode():
        sample_layout(model, rows, out / "images", [per_tag[m["tag"]] for m in rows], cfg.seed,
                      sampler=cfg.sampler, steps=cfg.steps, shift=cfg.shift, cfg_scale=cfg_scale)  # fmt: skip
    if not geneval_rows(rows):
        return None
    results, summary = score_folder(out / "images", detector, rules)
    write_scores(out, results, summary)
    return summary


def off_target_of_folder(images: Path, background: tuple[int, int, int]) -> dict[str, float]:
    """`off_target` (background drift and its parts, pixel std) over every image of a GenEval-layout folder."""
    paths = [path for folder in iter_layout(images) for path in folder.images]
    return off_target(np.stack([load_image(p) for p in paths]), background)


def reward_means(images: Path, mix: RewardMix, batch: int = 64) -> dict[str, float]:
    """Mean of each reward of `mix` over a GenEval-layout folder's images (read back from disk)."""
    items = [(folder.metadata, path) for folder in iter_layout(images) for path in folder.images]
    sums: dict[str, float] = dict.fromkeys(mix.weights, 0.0)
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        _, parts = mix(np.stack([load_image(p) for _, p in chunk]), [m for m, _ in chunk])
        for name, result in parts.items():
            sums[name] += float(result.scores.sum())
    return {name: total / max(len(items), 1) for name, total in sums.items()}


def scores_table(summaries: dict[str, dict], rewards: dict[str, dict[str, float]] | None = None,
                 off: dict[str, dict[str, float]] | None = None) -> dict:  # fmt: skip
    """{"trained": {"overall", per tag...}, "base": {...}, ["base_cfg": {...}], "gain": {...}} and, with
    `rewards` ({model: {reward: mean}}), "rewards": {reward: {"base", "trained", "gain"}}; with `off`
    ({model: off_target measures}), "off_target": {model: {background_drift, border_objects, ...}}."""
    table = {name: {"overall": s["overall"], **s["per_tag"]} for name, s in summaries.items() if s is not None}
    if {"trained", "base"} <= table.keys():
        table["gain"] = {k: table["trained"][k] - table["base"][k] for k in table["trained"]}
    if off:
        table["off_target"] = off
    if rewards and {"trained", "base"} <= rewards.keys() and rewards["trained"]:
        base, trained = rewards["base"], rewards["trained"]
        table["rewards"] = {r: {"base": base[r], "trained": trained[r], "gain": trained[r] - base[r]} for r in trained}
    return table


def rewards_csv(table: dict) -> str:
    """reward,base,trained rows, for the `dvc plots` bar chart beside the per-tag one."""
    lines = ["reward,base,trained"]
    lines += [f"{name},{r['base']:.4f},{r['trained']:.4f}" for name, r in table.get("rewards", {}).items()]
    return "\n".join(lines) + "\n"


def per_tag_csv(table: dict) -> str:
    """tag,base,base_cfg,trained rows (overall first; base_cfg = the base with CFG, nan when not scored),
    for the `dvc plots` bar charts."""
    lines = ["tag,base,base_cfg,trained"]
    for tag in table.get("trained", {}):
        base, base_cfg = (table.get(name, {}).get(tag, float("nan")) for name in ("base", "base_cfg"))
        lines.append(f"{tag},{base:.4f},{base_cfg:.4f},{table['trained'][tag]:.4f}")
    return "\n".join(lines) + "\n"


def grid_images(model, rows: list[dict], cfg: EvaluateConfig, cfg_scale: float = 1.0) -> np.ndarray:
    """One model's block of the comparison grid: the same test prompts and seeds for every model,
    uint8 (n, H, W, 3)."""
    shown = rows[:: max(1, len(rows) // cfg.grid_prompts)][: cfg.grid_prompts]
    seeds = [image_seed(cfg.seed, i, 0) for i in range(len(shown))]
    with torch.inference_mode():
        return generate(model, [r["prompt"] for r in shown], seeds, cfg.sampler, cfg.steps, cfg.shift,
                        cfg_scale=cfg_scale, progress=False)  # fmt: skip


def comparison_grid(blocks: list[np.ndarray]) -> np.ndarray:
    """The blocks of `grid_images`, one model per block, as one image."""
    n = len(blocks[0])
    return image_grid(np.concatenate(blocks), ncol=n if n <= 16 else 8)


def write_outputs(out: Path, table: dict, grid: np.ndarray) -> None:
    """scores.json (the DVC metric), per_tag.csv and rewards.csv (the bar plots), samples.png (the grid)."""
    write_json(out / "scores.json", table)
    atomic_write_text(out / "per_tag.csv", per_tag_csv(table))
    atomic_write_text(out / "rewards.csv", rewards_csv(table))
    save_png(out / "samples.png", grid)


def write_skipped(folder: Path, why: str) -> None:
    """A declared output folder that this run leaves empty, holding `SKIPPED.txt` with the reason (a stale
    folder from an earlier run with other params is replaced)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    atomic_write_text(folder / "SKIPPED.txt", why + "\n")
