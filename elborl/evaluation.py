"""Strict GenEval of a model: sample the prompts, judge the images with a detector, summarise."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from elborl.geneval_io import write_layout
from elborl.models.generate import generate, image_seed
from elborl.rewards.detectors import Detector, detect_all
from elborl.rewards.geneval import DEFAULT_RULES, Rules, summarize
from elborl.rewards.scoring import judge


def images_per_prompt_by_tag(rows: list[dict], images_per_prompt: int, min_images_per_tag: int) -> dict[str, int]:
    """Images per prompt for each tag: at least `images_per_prompt`, more for tags with few prompts, so
    every tag mean rests on >= `min_images_per_tag` images (the embedded world has only 4
    single-object prompts; one image of one prompt would make that tag's mean 0 or 1)."""
    counts: dict[str, int] = {}
    for m in rows:
        counts[m["tag"]] = counts.get(m["tag"], 0) + 1
    return {tag: max(images_per_prompt, -(-min_images_per_tag // n)) for tag, n in counts.items()}


def geneval_of_model(
    model,
    rows: list[dict],
    detector: Detector,
    images_per_prompt: int = 1,
    seed: int = 0,
    rules: Rules = DEFAULT_RULES,
    min_images_per_tag: int = 0,
    **sampling,
) -> dict:
    """Sample images for each prompt and score them (strict GenEval).

    Args:
        model: A model with `encode`, `velocity`, `sample_shape`, `from_sample_space`.
        rows: GenEval metadata of the prompts.
        detector: Judge.
        images_per_prompt: Images per prompt (GenEval: 4).
        min_images_per_tag: Sample more images per prompt in tags with few prompts, so that every
            tag mean rests on at least this many images (0 = plain GenEval).
        seed: Noise seed (image j of prompt i gets `image_seed(seed, i, j)`).
        rules: GenEval options.
        **sampling: `generate`'s sampler settings (sampler, steps, shift, cfg_scale, ...).

    Returns:
        GenEval summary {"overall", "per_tag", "n_images"}.
    """
    metas, images = geneval_images(model, rows, images_per_prompt, seed, min_images_per_tag, **sampling)
    return score_images(images, metas, detector, rules)


def geneval_images(
    model, rows: list[dict], images_per_prompt: int = 1, seed: int = 0, min_images_per_tag: int = 0, **sampling
) -> tuple[list[dict], np.ndarray]:
    """The images `geneval_of_model` judges: (metadata per image, uint8 images (B, H, W, 3))."""
    per_tag = images_per_prompt_by_tag(rows, images_per_prompt, min_images_per_tag)
    metas = [m for m in rows for _ in range(per_tag[m["tag"]])]
    seeds = [image_seed(seed, i, j) for i, m in enumerate(rows) for j in range(per_tag[m["tag"]])]
    return metas, generate(model, [m["prompt"] for m in metas], seeds, **sampling)


def score_images(images, metas: list[dict], detector: Detector, rules: Rules = DEFAULT_RULES) -> dict:
    """Strict GenEval summary of images with their metadata."""
    found = detect_all(detector, images)  # batched where the detector can batch
    results = [{"tag": m["tag"], "correct": judge(f, m, rules)[0]} for m, f in zip(metas, found, strict=True)]
    return summarize(results)


def sample_layout(
    model,
    rows: list[dict],
    out: str | Path,
    images_per_prompt: int | list[int],
    seed: int = 0,
    batch_size: int = 64,
    **sampling,
) -> None:
    """Sample every prompt into GenEval's folder layout, several prompts per forward batch.

    Args:
        model: What `generate` samples (a TinyT2I, a Policy).
        rows: GenEval metadata, one per prompt.
        out: Output folder.
        images_per_prompt: Images per prompt (or a count per prompt).
        seed: Image j of prompt i gets `image_seed(seed, i, j)`.
        batch_size: Images per forward pass.
        **sampling: `generate`'s sampler settings.
    """
    counts = images_per_prompt if isinstance(images_per_prompt, list) else [images_per_prompt] * len(rows)
    cache: dict[int, list] = {}

    def make_images(i: int, meta: dict) -> list:
        if i not in cache:  # sample this prompt and the next ones together, in full batches
            idx, n = [], 0
            for k in range(i, len(rows)):
                if idx and n + counts[k] > batch_size:
                    break
                idx.append(k)
                n += counts[k]
            prompts = [rows[k]["prompt"] for k in idx for _ in range(counts[k])]
            seeds = [image_seed(seed, k, j) for k in idx for j in range(counts[k])]
            images = list(generate(model, prompts, seeds, batch_size=batch_size, progress=False, **sampling))
            for k in idx:
                cache[k], images = images[: counts[k]], images[counts[k] :]
        return cache.pop(i)

    write_layout(out, rows, counts, make_images)


def off_target(images: np.ndarray, background: tuple[int, int, int], tol: float = 0.1) -> dict:
    """Reward-hacking checks on uint8 images (B, H, W, 3), all in [0, 1].

    - background_drift: mean |pixel - background| over the 2-pixel border (channel mean, pixels in [0, 1]);
      objects may touch the canvas edge (most rendered scenes have one that does), so it is the sum of:
    - border_objects: share of border pixels farther than `tol` from the background (objects drawn at the
      edge: larger or more objects than the world draws), and
    - background_tint: mean |pixel - background| over the other border pixels (a tinted canvas).
    - pixel_std: the std of every pixel value.
    """
    x = images.astype(np.float32) / 255  # (B, H, W, 3)
    border = np.concatenate([x[:, :2].reshape(len(x), -1, 3), x[:, -2:].reshape(len(x), -1, 3),
                             x[:, :, :2].reshape(len(x), -1, 3), x[:, :, -2:].reshape(len(x), -1, 3)], 1)  # fmt: skip
    dist = np.abs(border - np.asarray(background, np.float32) / 255).mean(-1)  # (B, N) per border pixel
    objects = dist > tol
    tint = float(dist[~objects].mean()) if (~objects).any() else 0.0
    return {"background_drift": float(dist.mean()), "border_objects": float(objects.mean()),
            "background_tint": tint, "pixel_std": float(x.std())}  # fmt: skip
