"""Image degradations that mimic a generator's mistakes, for testing detectors: blur and pixel noise."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def degrade(image: np.ndarray, rng: np.random.Generator, blur: float = 1.0, noise: float = 0.1) -> np.ndarray:
    """Gaussian blur (sigma `blur` pixels), then Gaussian pixel noise (std `noise` on the [0, 1] scale).

    Args:
        image: uint8 (H, W, 3).
        rng: Noise source.
        blur: Blur sigma in pixels (0 = none).
        noise: Noise std on [0, 1].

    Returns:
        uint8 (H, W, 3).
    """
    x = image.astype(np.float32) / 255.0
    if blur > 0:
        x = ndimage.gaussian_filter(x, sigma=(blur, blur, 0))
    x = x + rng.normal(0.0, noise, size=x.shape)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
