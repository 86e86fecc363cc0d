"""Prompts -> images with a model and a sampler, batched; the same path for evaluation and `elborl sample`."""

from __future__ import annotations

import sys

import numpy as np
import torch
from tqdm import tqdm

from elborl.sampling import guided, sample


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def image_seed(seed: int, prompt_index: int, image_index: int) -> int:
    """The noise seed of image j of prompt i: independent streams for every (seed, i, j)."""
    return int(np.random.SeedSequence([seed, prompt_index, image_index]).generate_state(1)[0])


def initial_noise(seeds: list[int], shape: tuple[int, ...]) -> torch.Tensor:
    """One noise tensor per seed, so an image depends on its own seed only (not on batching)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds])


@torch.inference_mode()
def generate(
    model,
    prompts: list[str],
    seeds: list[int],
    sampler: str = "dpm2",
    steps: int = 10,
    shift: float = 1.0,
    cfg_scale: float = 1.0,
    noise_level: float = 0.7,
    batch_size: int = 64,
    progress: bool = True,
) -> np.ndarray:
    """Sample one image per (prompt, seed).

    Args:
        model: Anything with `encode(prompts)`, `velocity(x, t, cond)`, `sample_shape` and
            `from_sample_space(x)` (a TinyT2I or a Policy).
        prompts: Prompt per image.
        seeds: Seed per image (initial noise; `flow_sde` noise is seeded from the batch's first seed).
        sampler, steps, shift, cfg_scale, noise_level: Sampler settings (see `elborl.sampling`).
        batch_size: Images per forward pass.

    Returns:
        uint8 (N, H, W, 3).
    """
    out = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="sample", unit="batch", disable=not (progress and sys.stderr.isatty())):
        batch, batch_seeds = prompts[start : start + batch_size], seeds[start : start + batch_size]
        cond = model.encode(batch)
        uncond = model.encode([""] * len(batch)) if cfg_scale != 1.0 else None
        velocity = guided(
            lambda x, t, c=cond: model.velocity(x, t, c),
            (lambda x, t, u=uncond: model.velocity(x, t, u)) if uncond is not None else None,
            cfg_scale,
        )
        # Noise is drawn on the CPU and moved, so an image is the same whatever the device.
        device = getattr(model, "device", torch.device("cpu"))
        noise = initial_noise(batch_seeds, model.sample_shape).to(device)
        gen = torch.Generator(device=device).manual_seed(batch_seeds[0] + 1)
        x0 = sample(velocity, noise, sampler, steps, shift, noise_level, generator=gen).x0
        out.append(to_uint8(model.from_sample_space(x0)))
    return np.concatenate(out)
