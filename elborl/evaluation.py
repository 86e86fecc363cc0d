"""Strict GenEval of a model: sample the prompts, judge the images with a detector, summarise."""

from __future__ import annotations

from elborl.models.generate import generate, image_seed
from elborl.rewards.detectors import Detector
from elborl.rewards.geneval import DEFAULT_RULES, Rules, summarize
from elborl.rewards.scoring import score_image


def geneval_of_model(
    model,
    rows: list[dict],
    detector: Detector,
    images_per_prompt: int = 1,
    seed: int = 0,
    rules: Rules = DEFAULT_RULES,
    **sampling,
) -> dict:
    """Sample `images_per_prompt` images per prompt and score them.

    Args:
        model: A model with `encode`, `velocity`, `size`.
        rows: GenEval metadata of the prompts.
        detector: Judge.
        images_per_prompt: Images per prompt.
        seed: Noise seed (image j of prompt i gets `image_seed(seed, i, j)`).
        rules: GenEval options.
        **sampling: `generate`'s sampler settings (sampler, steps, shift, cfg_scale, ...).

    Returns:
        GenEval summary {"overall", "per_tag", "n_images"}.
    """
    metas = [m for m in rows for _ in range(images_per_prompt)]
    seeds = [image_seed(seed, i, j) for i in range(len(rows)) for j in range(images_per_prompt)]
    images = generate(model, [m["prompt"] for m in metas], seeds, **sampling)
    results = [
        {"tag": m["tag"], "correct": score_image(image, m, detector, rules)[0]}
        for m, image in zip(metas, images, strict=True)
    ]
    return summarize(results)
