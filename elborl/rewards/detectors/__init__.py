"""Detectors behind one interface (image -> detections), chosen by name from a registry.

A detector has `name`, `classes` (the class names it can detect), `image_size` (the side it expects,
or None) and `detect(image: uint8 (H, W, 3)) -> list[Detection]` (and may have `detect_batch`, which
`detect_all` uses). Adding one = one factory here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Protocol

import numpy as np

from elborl.config import GenEvalConfig
from elborl.rewards.geneval import Detection
from elborl.world.spec import WorldSpec


class Detector(Protocol):
    name: str
    classes: frozenset[str]
    image_size: int | None

    def detect(self, image: np.ndarray) -> list[Detection]: ...


def _shapes(spec: WorldSpec, cfg: GenEvalConfig) -> Detector:
    from elborl.rewards.detectors.shapes import ShapesDetector

    return ShapesDetector(spec)


@functools.cache
def _mask2former_once(cfg: GenEvalConfig) -> Detector:
    from elborl.rewards.detectors.mask2former import Mask2FormerDetector

    return Mask2FormerDetector(cfg)


def _mask2former(spec: WorldSpec, cfg: GenEvalConfig) -> Detector:
    return _mask2former_once(cfg)  # Mask2Former and CLIP load once per process (the section is hashable)


#: name -> factory(world spec, geneval section) -> detector.
DETECTORS: dict[str, Callable[[WorldSpec, GenEvalConfig], Detector]] = {
    "shapes": _shapes,
    "mask2former": _mask2former,
}


def detect_all(detector: Detector, images) -> list[list[Detection]]:
    """Detections of each image, batched where the detector can batch."""
    batch = getattr(detector, "detect_batch", None)
    return batch(list(images)) if batch else [detector.detect(image) for image in images]


def check_image_size(detector: Detector, size: int, source: str) -> None:
    """Refuse a model whose images the detector cannot read (e.g. a tiny model trained for another
    world size).

    Raises:
        UserError: Naming `source`, both sizes and the detector.
    """
    from elborl.errors import UserError

    if detector.image_size not in (None, size):
        raise UserError(f"{source}: the model draws {size}x{size} images, the {detector.name} detector reads "
                        f"{detector.image_size}x{detector.image_size} (world.size)")  # fmt: skip


def detector_classes(name: str, spec: WorldSpec) -> frozenset[str]:
    """The classes a registered detector detects, without loading it (checks before any work)."""
    if name == "mask2former":
        from elborl.rewards.detectors.mask2former import geneval_classes

        return frozenset(geneval_classes())
    return frozenset(spec.classes)


def check_classes(detector: Detector, rows: list[dict], source: str) -> None:
    """Refuse prompts that name classes the detector cannot detect (they would be judged absent: a
    reward of zero and a failed verdict for every image, whatever the model draws). `detector` needs
    only `name` and `classes`.

    Raises:
        UserError: Naming `source`, the classes, and the detector's classes.
    """
    from elborl.errors import UserError
    from elborl.geneval_io import metadata_classes

    unknown = metadata_classes(rows) - detector.classes
    if unknown:
        raise UserError(
            f"{source}: the metadata names classes the '{detector.name}' detector cannot detect: "
            f"{', '.join(sorted(unknown))} (it detects: {', '.join(sorted(detector.classes))}); geneval.detector "
            "chooses the detector"
        )


def build_detector(name: str, spec: WorldSpec, cfg: GenEvalConfig | None = None) -> Detector:
    """Instantiate a detector by name.

    Args:
        name: A `DETECTORS` key.
        spec: The embedded world (the shapes detector's classes and colours).
        cfg: The `geneval` section (mask2former's weights, device, batch size, thresholds).

    Raises:
        KeyError: Unknown name (the CLI validates names before calling).
        UserError: Missing weights (the message names the param and the expected folder content).
    """
    return DETECTORS[name](spec, cfg or GenEvalConfig())
