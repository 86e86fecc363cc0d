"""The world's spec: shape classes, GenEval's ten colours with fixed RGB anchors, canvas and sizes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from elborl.config import WorldConfig

#: GenEval's ten colour names (evaluate_images.py order) with the RGB anchors the renderer paints.
#: Anchors are far apart in RGB (the closest pair, orange/yellow, is 85 apart) so that a detector
#: can name the colour of a blurry, off-colour generated object by its nearest anchor.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 20),
    "yellow": (240, 225, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 220),
    "purple": (130, 40, 180),
    "pink": (250, 140, 200),
    "brown": (125, 70, 25),
    "black": (15, 15, 15),
    "white": (245, 245, 245),
}

#: Least RGB distance between the background and any colour anchor.
MIN_BACKGROUND_DISTANCE = 80.0


@dataclass(frozen=True)
class WorldSpec:
    """Everything a renderer or detector must agree on.

    Args:
        size: Canvas side in pixels.
        background: Background RGB (0-255), none of the ten colours.
        classes: Shape class names, in label order.
        colors: Colour name -> RGB anchor (0-255).
        min_object: Smallest object side in pixels.
        max_object: Largest object side in pixels.
        gap: Least free pixels between two objects' boxes.
    """

    size: int
    background: tuple[int, int, int]
    classes: tuple[str, ...]
    colors: dict[str, tuple[int, int, int]]
    min_object: int
    max_object: int
    gap: int

    @classmethod
    def from_config(cls, cfg: WorldConfig | None = None) -> WorldSpec:
        """Build the spec from the `world` params section (defaults when None)."""
        cfg = cfg or WorldConfig()
        bg = tuple(cfg.background)
        dist = min(float(np.linalg.norm(np.subtract(bg, rgb))) for rgb in COLORS.values())
        if dist < MIN_BACKGROUND_DISTANCE:
            raise ValueError(
                f"world.background: expected an RGB at least {MIN_BACKGROUND_DISTANCE:.0f} from every "
                f"colour anchor, found {list(bg)} ({dist:.0f} from the closest)"
            )
        return cls(
            size=cfg.size,
            background=bg,  # type: ignore[arg-type]
            classes=tuple(cfg.classes),
            colors=dict(COLORS),
            min_object=cfg.min_object,
            max_object=cfg.max_object,
            gap=cfg.gap,
        )

    def to_json(self) -> dict:
        """The spec as printed by `elborl world spec`."""
        return {
            "size": self.size,
            "background": list(self.background),
            "classes": list(self.classes),
            "colors": {name: list(rgb) for name, rgb in self.colors.items()},
            "min_object": self.min_object,
            "max_object": self.max_object,
        }
