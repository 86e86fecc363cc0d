"""The web-like pretraining corpus: scenes of every kind, captions exact at zero noise, and the noise
knobs do what they say."""

import re

import numpy as np
import pytest

from elborl.config import BaseConfig
from elborl.rewards.geneval import relative_position
from elborl.world.corpus import KINDS, caption, random_scene, web_batch
from elborl.world.prompts import NUMBERS
from elborl.world.spec import WorldSpec

SPEC = WorldSpec.from_config()
EXACT = BaseConfig(corpus="web", caption_omit=0.0, caption_misstate=0.0, caption_drop_object=0.0)


def _scenes(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(*random_scene(SPEC, rng), rng) for _ in range(n)]


def test_exact_captions_describe_the_scene():
    kinds = set()
    for kind, objects, rng in _scenes(200):
        kinds.add(kind)
        text = caption(kind, objects, SPEC, EXACT, rng)
        assert text.startswith("a photo of ")
        if kind == "single":
            o = objects[0]
            assert text == f"a photo of {'an' if o.color[0] in 'aeiou' else 'a'} {o.color} {o.cls}"
        elif kind == "count":
            n = len(objects)
            assert 2 <= n <= 4 and {o.cls for o in objects} == {objects[0].cls}
            assert f" {NUMBERS[n]} " in text
        else:
            assert len(objects) == 2 and objects[0].cls != objects[1].cls
            for o in objects:  # both objects named with their own colour
                assert f"{o.color} {o.cls}" in text
            if kind == "relation":  # "a photo of a <col> A <rel> a <col> B": the relation holds in the image
                a, b = objects[1], objects[0]
                rel = re.search(r"(left of|right of|above|below)", text).group(1)
                assert text.index(a.cls) < text.index(rel) < text.index(b.cls)
                assert rel in relative_position(a.box, b.box)
    assert kinds == set(KINDS)


def test_noise_knobs():
    omit = BaseConfig(corpus="web", caption_omit=1.0, caption_misstate=0.0, caption_drop_object=0.0)
    wrong = BaseConfig(corpus="web", caption_omit=0.0, caption_misstate=1.0, caption_drop_object=0.0)
    drop = BaseConfig(corpus="web", caption_omit=0.0, caption_misstate=0.0, caption_drop_object=1.0)
    for kind, objects, rng in _scenes(100, seed=1):
        said = caption(kind, objects, SPEC, omit, rng)
        assert not any(c in said.split() for c in SPEC.colors)  # no colour, count or relation said
        assert not any(n in said.split() for n in NUMBERS.values())
        assert not any(r in said for r in ("left of", "right of", "above", "below"))
        for o in objects:  # classes are never wrong or missing (plural for counts)
            assert o.cls in said
        misstated = caption(kind, objects, SPEC, wrong, rng)
        if kind in ("single", "pair", "relation"):
            assert not any(f"{o.color} {o.cls}" in misstated for o in objects)
        if kind == "count":
            assert f" {NUMBERS[len(objects)]} " not in misstated
        if kind in ("pair", "relation"):
            dropped = caption(kind, objects, SPEC, drop, rng)
            assert sum(o.cls in dropped for o in objects) == 1


@pytest.mark.parametrize("n", [1, 7])
def test_web_batch_shapes(n):
    images, captions = web_batch(SPEC, BaseConfig(corpus="web"), n, np.random.default_rng(0))
    assert images.shape == (n, SPEC.size, SPEC.size, 3) and images.dtype == np.uint8 and len(captions) == n
