"""Sample grids: many small images tiled into one PNG a person can look at."""

from __future__ import annotations

import numpy as np


def image_grid(images: np.ndarray, ncol: int = 8, scale: int = 4, pad: int = 1) -> np.ndarray:
    """Tile uint8 (N, H, W, 3) images into one (rows x cols) image, each upscaled `scale`x (nearest).

    Args:
        images: uint8 (N, H, W, 3).
        ncol: Images per row.
        scale: Integer upscale factor (tiny images are unreadable at 1x).
        pad: White pixels between tiles (before upscaling).
    """
    n, h, w, _ = images.shape
    nrow = -(-n // ncol)
    canvas = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, ncol)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = image
    return canvas.repeat(scale, axis=0).repeat(scale, axis=1)
