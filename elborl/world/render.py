"""Render GenEval metadata into images that satisfy it: random layouts, anti-aliased shapes.

Each include clause becomes `count` objects of its class (in its colour, or a random one); a
`position` clause is placed so that GenEval's relation holds with a margin (the normalised offset
passes 0.5 by `POSITION_MARGIN`), so a detector's slightly-off boxes still read the same relation.
Boxes stay `gap` pixels apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from elborl.rewards.geneval import relative_position_scores
from elborl.world.shapes import coverage
from elborl.world.spec import WorldSpec

POSITION_MARGIN = 0.15
MAX_TRIES = 2000


@dataclass(frozen=True)
class SceneObject:
    """One object of a scene: class, colour name and box (x, y top-left, side) in pixels."""

    cls: str
    color: str
    x: int
    y: int
    side: int

    @property
    def box(self) -> tuple[float, float, float, float]:
        """GenEval-style box [x1, y1, x2, y2] in pixels."""
        return (self.x, self.y, self.x + self.side, self.y + self.side)


def _relation_holds(obj: SceneObject, target: SceneObject, relation: str) -> bool:
    scores = relative_position_scores(obj.box, target.box)
    return scores.get(relation, 0.0) > 0.5 + POSITION_MARGIN


def _free_positions(side: int, placed: list[SceneObject], spec: WorldSpec) -> np.ndarray:
    """Boolean (n, n) map over top-left corners (y, x) where a side x side box keeps `gap` from all placed."""
    n = spec.size - side + 1
    ok = np.ones((n, n), dtype=bool)
    for o in placed:
        # Corners whose box would come within `gap` of o: x in (o.x - side - gap, o.x + o.side + gap).
        x_lo, x_hi = max(o.x - side - spec.gap + 1, 0), max(o.x + o.side + spec.gap, 0)
        y_lo, y_hi = max(o.y - side - spec.gap + 1, 0), max(o.y + o.side + spec.gap, 0)
        ok[y_lo:y_hi, x_lo:x_hi] = False
    return ok


def layout(metadata: dict, spec: WorldSpec, rng: np.random.Generator) -> list[SceneObject]:
    """Draw a random scene that satisfies GenEval metadata.

    Objects are placed one at a time, include clause by clause (a position clause's target clause
    comes first), each at a uniformly drawn free spot that keeps the gap and, for a position clause,
    its relation to every target. A dead end restarts the scene; repeated dead ends shrink the
    largest allowed side by a pixel, so crowded scenes (four big squares) still fit.

    Args:
        metadata: GenEval metadata ({tag, include, [exclude], prompt}); classes must be the world's.
        spec: The world.
        rng: Source of randomness (sizes, positions, free colours).

    Returns:
        The scene's objects, include clause by clause.

    Raises:
        RuntimeError: No layout found in `MAX_TRIES` attempts (the world is too small for the scene).
    """
    colors = list(spec.colors)
    include = metadata["include"]
    for attempt in range(MAX_TRIES):
        max_side = max(spec.max_object - attempt // 50, spec.min_object)
        objects: list[SceneObject] = []
        clause_of: list[int] = []
        for ci, clause in enumerate(include):
            for _ in range(clause["count"]):
                side = int(rng.integers(spec.min_object, max_side + 1))
                free = _free_positions(side, objects, spec)
                if "position" in clause:
                    relation, target = clause["position"]
                    targets = [o for o, c in zip(objects, clause_of, strict=True) if c == target]
                    for y, x in zip(*np.nonzero(free), strict=True):
                        probe = SceneObject(clause["class"], "", int(x), int(y), side)
                        free[y, x] = all(_relation_holds(probe, t, relation) for t in targets)
                ys, xs = np.nonzero(free)
                if len(ys) == 0:
                    break
                k = int(rng.integers(len(ys)))
                color = clause.get("color") or colors[int(rng.integers(len(colors)))]
                objects.append(SceneObject(clause["class"], color, int(xs[k]), int(ys[k]), side))
                clause_of.append(ci)
        if len(objects) == sum(c["count"] for c in include):
            return objects
    raise RuntimeError(f"no layout found for {metadata['prompt']!r} in {MAX_TRIES} tries")


@lru_cache(maxsize=256)
def _alpha(cls: str, side: int) -> np.ndarray:
    return coverage(cls, side)


def draw(objects: list[SceneObject], spec: WorldSpec) -> np.ndarray:
    """Paint objects on the background with anti-aliased edges.

    Returns:
        uint8 array (size, size, 3).
    """
    canvas = np.empty((spec.size, spec.size, 3), dtype=np.float32)
    canvas[:] = spec.background
    for obj in objects:
        alpha = _alpha(obj.cls, obj.side)[..., None]  # (side, side, 1)
        patch = canvas[obj.y : obj.y + obj.side, obj.x : obj.x + obj.side]
        patch[:] = patch * (1.0 - alpha) + np.asarray(spec.colors[obj.color], np.float32) * alpha
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def render(metadata: dict, spec: WorldSpec, rng: np.random.Generator) -> np.ndarray:
    """A random image (size, size, 3) uint8 that satisfies `metadata`."""
    return draw(layout(metadata, spec, rng), spec)


def render_images(metadata: dict, spec: WorldSpec, n: int, seed: int, index: int) -> list[np.ndarray]:
    """`n` images of one prompt; prompt `index` has its own stream, so prompts render independently."""
    rng = np.random.default_rng([seed, index])
    return [render(metadata, spec, rng) for _ in range(n)]
