"""The world's "web": random scenes of every kind with captions that, like alt-text, are often vague
or wrong about colours, counts and places.

A real base (SD3.5) was pretrained on web images whose captions name the objects but often omit or
misstate their number, colour and arrangement; it has seen red cars and blue benches, yet without
guidance it binds words to attributes weakly (GenEval 0.24 without CFG, ~0.63 with it). Pretraining
the tiny base on this corpus instead of on the RL train prompts puts it in that regime:

- Scenes cover every kind GenEval asks about (one object, n of a class, two classes, two classes in
  a relation) over every class and colour, drawn independently of the RL prompt split.
- The caption is written from the rendered objects in GenEval's wording, then degraded: each
  attribute (an object's colour, the count, the relation) is left out with probability `omit` and,
  when stated, replaced by a wrong one with probability `misstate`; one of two objects is left out
  with probability `drop_object`. Class names are never wrong: the base draws every class well.
"""

from __future__ import annotations

import numpy as np

from elborl.config import BaseConfig
from elborl.rewards.geneval import RELATIONS, relative_position_scores
from elborl.world.prompts import NUMBERS
from elborl.world.render import SceneObject, draw, layout
from elborl.world.shapes import plural
from elborl.world.spec import WorldSpec

#: Scene kinds, drawn uniformly: one object, several of one class, two classes, two in a relation.
KINDS = ("single", "count", "pair", "relation")
#: The relation named when a `relation` scene's caption flips it.
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def random_scene(spec: WorldSpec, rng: np.random.Generator, max_count: int = 4) -> tuple[str, list[SceneObject]]:
    """A random scene of a random kind, every object's colour drawn uniformly.

    Returns:
        (kind, objects); a `relation` scene's second object is placed in a random relation to the first.
    """
    kind = KINDS[int(rng.integers(len(KINDS)))]
    colors = list(spec.colors)
    classes = list(spec.classes)
    a, b = (classes[i] for i in rng.choice(len(classes), size=2, replace=False))
    col = [colors[int(i)] for i in rng.integers(len(colors), size=2)]
    if kind == "single":
        include = [{"class": a, "count": 1, "color": col[0]}]
    elif kind == "count":
        include = [{"class": a, "count": int(rng.integers(2, max_count + 1))}]  # each a random colour
    elif kind == "pair":
        include = [{"class": a, "count": 1, "color": col[0]}, {"class": b, "count": 1, "color": col[1]}]
    else:
        rel = RELATIONS[int(rng.integers(len(RELATIONS)))]
        include = [{"class": b, "count": 1, "color": col[1]},
                   {"class": a, "count": 1, "color": col[0], "position": [rel, 0]}]  # fmt: skip
    return kind, layout({"include": include, "prompt": kind}, spec, rng)


def _object(obj: SceneObject, colors: list[str], cfg: BaseConfig, rng: np.random.Generator) -> str:
    """'a [colour] class': the colour left out w.p. omit, else wrong w.p. misstate."""
    if rng.random() < cfg.caption_omit:
        return _a(obj.cls)
    color = obj.color
    if rng.random() < cfg.caption_misstate:
        others = [c for c in colors if c != obj.color]
        color = others[int(rng.integers(len(others)))]
    return _a(f"{color} {obj.cls}")


def _count(n: int, cls: str, cfg: BaseConfig, rng: np.random.Generator, max_count: int) -> str:
    if rng.random() < cfg.caption_omit:
        return plural(cls)  # "circles": how many is not said
    if rng.random() < cfg.caption_misstate:
        n = int(rng.choice([k for k in range(1, max_count + 1) if k != n]))
    return _a(cls) if n == 1 else f"{NUMBERS[n]} {plural(cls)}"


def caption(kind: str, objects: list[SceneObject], spec: WorldSpec, cfg: BaseConfig, rng: np.random.Generator,
            max_count: int = 4) -> str:  # fmt: skip
    """A web-like caption of a scene drawn by `random_scene` (see the module docstring).

    Args:
        kind: The scene's kind.
        objects: Its objects, as `layout` placed them.
        spec: The world.
        cfg: The `base` section (caption_omit, caption_misstate, caption_drop_object).
        rng: Source of randomness.
        max_count: Largest count a misstated caption names.
    """
    colors = list(spec.colors)
    if kind == "single":
        return f"a photo of {_object(objects[0], colors, cfg, rng)}"
    if kind == "count":
        return f"a photo of {_count(len(objects), objects[0].cls, cfg, rng, max_count)}"
    first, second = (objects[1], objects[0]) if kind == "relation" else (objects[0], objects[1])
    if rng.random() < cfg.caption_drop_object:
        kept = (first, second)[int(rng.integers(2))]
        return f"a photo of {_object(kept, colors, cfg, rng)}"
    words_a, words_b = _object(first, colors, cfg, rng), _object(second, colors, cfg, rng)
    if kind == "relation" and rng.random() >= cfg.caption_omit:
        scores = relative_position_scores(first.box, second.box)
        rel = max(scores, key=scores.get)  # the relation the layout placed (it holds with a margin)
        if rng.random() < cfg.caption_misstate:
            rel = OPPOSITE[rel]
        return f"a photo of {words_a} {rel} {words_b}"
    if rng.random() < 0.5:  # "and" lists the two in either order
        words_a, words_b = words_b, words_a
    return f"a photo of {words_a} and {words_b}"


def web_batch(spec: WorldSpec, cfg: BaseConfig, n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """`n` random scenes rendered to uint8 (n, H, W, 3) with their web-like captions."""
    images, captions = [], []
    for _ in range(n):
        kind, objects = random_scene(spec, rng)
        images.append(draw(objects, spec))
        captions.append(caption(kind, objects, spec, cfg, rng))
    return np.stack(images), captions  # (n, H, W, 3)
