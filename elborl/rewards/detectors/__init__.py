"""Detectors behind one interface (image -> detections), chosen by name from a registry.

A detector has `name`, `classes` (the class names it can detect), `image_size` (the side it expects,
or None) and `detect(image: uint8 (H, W, 3)) -> list[Detection]`. Adding one = one factory here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from elborl.rewards.geneval import Detection
from elborl.world.spec import WorldSpec


class Detector(Protocol):
    name: str
    classes: frozenset[str]
    image_size: int | None

    def detect(self, image: np.ndarray) -> list[Detection]: ...


def _shapes(spec: WorldSpec) -> Detector:
    from elborl.rewards.detectors.shapes import ShapesDetector

    return ShapesDetector(spec)


#: name -> factory(world spec) -> detector.
DETECTORS: dict[str, Callable[[WorldSpec], Detector]] = {"shapes": _shapes}


def build_detector(name: str, spec: WorldSpec) -> Detector:
    """Instantiate a detector by name.

    Raises:
        KeyError: Unknown name (the CLI validates names before calling).
    """
    return DETECTORS[name](spec)
