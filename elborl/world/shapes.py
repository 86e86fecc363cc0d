"""Shape classes as coverage functions, rasterised with anti-aliasing by supersampling.

Every shape is axis-aligned and upright, and fills its square bounding box edge to edge (a circle
touches all four sides, a triangle's base is the box's bottom edge and its apex the top centre), so a
box fully determines a shape's pixels: the detector's templates and the renderer share this code.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Coverage = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: Half-width of a cross's arms relative to the half-side (arms one third of the side wide).
CROSS_HALF_WIDTH = 1.0 / 3.0


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Apex at (0, -1) (top; y grows downward), base from (-1, 1) to (1, 1).
    return (v <= 1.0) & (np.abs(u) <= (v + 1.0) / 2.0)


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    inside = (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    return inside & ((np.abs(u) <= CROSS_HALF_WIDTH) | (np.abs(v) <= CROSS_HALF_WIDTH))


def _diamond(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(u) + np.abs(v) <= 1.0


#: Registry of shape classes: name -> coverage test on box-normalised coordinates (u, v) in [-1, 1].
SHAPES: dict[str, Coverage] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "cross": _cross,
    "diamond": _diamond,
}

#: Plural forms used by the `counting` template.
PLURALS: dict[str, str] = {"cross": "crosses"}


def plural(name: str) -> str:
    """English plural of a class name ("circle" -> "circles", "cross" -> "crosses")."""
    return PLURALS.get(name, name + "s")


def coverage(shape: str, side: int, supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage of a shape filling a side x side pixel box.

    Args:
        shape: A name from `SHAPES`.
        side: Box side in pixels.
        supersample: Sub-samples per pixel and axis.

    Returns:
        Float32 array (side, side) in [0, 1]: the fraction of each pixel the shape covers.
    """
    n = side * supersample
    centers = (np.arange(n, dtype=np.float32) + 0.5) / n * 2.0 - 1.0  # sub-pixel centres in [-1, 1]
    v, u = np.meshgrid(centers, centers, indexing="ij")  # (n, n), v is the row (y) coordinate
    inside = SHAPES[shape](u, v).astype(np.float32)
    return inside.reshape(side, supersample, side, supersample).mean(axis=(1, 3))  # (side, side)
