"""GenEval's rules on hand-made detections: every clause type, boundary cases, the summary."""

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from elborl.rewards.geneval import (
    DEFAULT_RULES,
    Detection,
    Rules,
    evaluate,
    partial_credit,
    relative_position,
    select,
    summarize,
)
from elborl.world.prompts import enumerate_prompts


def det(cls, x, y, side=10, score=0.99, color="red"):
    return Detection(cls, (x, y, x + side, y + side), score, color)


def verdict(dets, meta, rules=DEFAULT_RULES):
    return evaluate(select(dets, meta["tag"], rules), meta, rules)


def meta(tag, include, exclude=None):
    m = {"tag": tag, "include": include, "prompt": "p"}
    if exclude:
        m["exclude"] = exclude
    return m


def test_single_object_presence_and_threshold():
    m = meta("single_object", [{"class": "circle", "count": 1}])
    assert verdict([det("circle", 0, 0, score=0.31)], m) == (True, "")
    assert verdict([det("circle", 0, 0, score=0.3)], m) == (
        False,
        "expected circle>=1, found 0",
    )  # strictly above
    assert verdict([det("square", 0, 0)], m) == (False, "expected circle>=1, found 0")


def test_counting_uses_0_9_threshold_and_exclude():
    m = meta("counting", [{"class": "circle", "count": 2}], [{"class": "circle", "count": 3}])
    two = [det("circle", 0, 0, score=0.95), det("circle", 20, 0, score=0.91)]
    assert verdict(two, m) == (True, "")
    # 0.8 passes GenEval's 0.3 but not counting's 0.9: only one circle counts.
    assert verdict([two[0], det("circle", 20, 0, score=0.8)], m) == (False, "expected circle>=2, found 1")
    # A low-score third circle is ignored; a confident one breaks the exclude clause.
    assert verdict([*two, det("circle", 0, 20, score=0.85)], m) == (True, "")
    assert verdict([*two, det("circle", 0, 20, score=0.92)], m) == (False, "expected circle<3, found 3")
    # The same images under a non-counting tag keep everything above 0.3.
    m2 = dict(m, tag="two_object")
    assert verdict([*two, det("circle", 0, 20, score=0.85)], m2) == (False, "expected circle<3, found 3")


def test_colour_only_on_top_count_detections_with_geneval_reason():
    m = meta("colors", [{"class": "circle", "count": 1, "color": "blue"}])
    assert verdict([det("circle", 0, 0, color="blue")], m) == (True, "")
    # Only the most confident circle is colour-checked.
    dets = [det("circle", 0, 0, score=0.9, color="red"), det("circle", 20, 0, score=0.8, color="blue")]
    assert verdict(dets, m) == (False, "expected blue circle>=1, found 0 blue; and 1 red")
    m2 = meta("color_attr", [{"class": "circle", "count": 2, "color": "red"}])
    dets = [det("circle", 0, 0, color="red"), det("circle", 20, 0, score=0.9, color="blue")]
    assert verdict(dets, m2) == (False, "expected red circle>=2, found 1 red; and 1 red, 1 blue")


def test_relative_position_rules_and_boundaries():
    a = (0, 0, 10, 10)  # centre (5, 5)
    assert relative_position(a, (20, 0, 30, 10)) == ["left of"]
    assert relative_position((20, 0, 30, 10), a) == ["right of"]
    assert relative_position(a, (0, 20, 10, 30)) == ["above"]
    assert relative_position((0, 20, 10, 30), a) == ["below"]
    assert relative_position(a, (20, 20, 30, 30)) == ["left of", "above"]
    # Offset 4 with a shrink of 0.1 x (10 + 10) = 2: dx = -(4 - 2) / 4 = -0.5 exactly, not < -0.5.
    assert relative_position(a, (4, 0, 14, 10)) == []
    assert relative_position(a, (4.01, 0, 14.01, 10)) == ["left of"]
    # Shrunk to zero on both axes: no relation at all.
    assert relative_position(a, (1, 1, 11, 11)) == []
    # Point-sized boxes: no shrink; offset (-3, 4) / 5 -> dx -0.6 (left), dy 0.8 (below).
    assert relative_position((0, 4, 0, 4), (3, 0, 3, 0)) == ["left of", "below"]


def test_position_clause_reasons():
    m = meta(
        "position",
        [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}],
    )
    assert verdict([det("square", 20, 0), det("circle", 0, 0)], m) == (True, "")
    assert verdict([det("square", 0, 0), det("circle", 20, 0)], m) == (
        False,
        "expected circle left of target, found right of target",
    )
    # Too close for any relation: GenEval's text keeps the empty join.
    assert verdict([det("square", 1, 1), det("circle", 0, 0)], m) == (
        False,
        "expected circle left of target, found  target",
    )
    assert verdict([det("circle", 0, 0)], m) == (
        False,
        "expected square>=1, found 0\nno target for circle to be left of",
    )
    # Every (object, target) pair must hold: two squares, the circle is left of only one.
    m2 = meta(
        "position",
        [{"class": "square", "count": 2}, {"class": "circle", "count": 1, "position": ["left of", 0]}],
    )
    dets = [det("square", 20, 0), det("square", 0, 20, score=0.9), det("circle", 10, 0)]
    assert verdict(dets, m2) == (False, "expected circle left of target, found above target")


def test_position_not_checked_when_colour_fails():
    m = meta(
        "position",
        [
            {"class": "square", "count": 1},
            {"class": "circle", "count": 1, "color": "blue", "position": ["left of", 0]},
        ],
    )
    ok, reason = verdict([det("square", 0, 0), det("circle", 20, 0, color="red")], m)
    assert not ok and reason == "expected blue circle>=1, found 0 blue; and 1 red"


def test_max_objects_and_nms():
    many = [det("circle", i, 0, score=0.99 - i * 0.001) for i in range(20)]
    assert len(select(many, "counting")["circle"]) == 16
    m = meta("counting", [{"class": "circle", "count": 2}], [{"class": "circle", "count": 17}])
    assert verdict(many, m) == (True, "")  # the cap keeps 16 < 17
    overlapping = [det("circle", 0, 0), det("circle", 1, 0, score=0.9), det("circle", 20, 0, score=0.8)]
    assert len(select(overlapping, "colors", Rules(max_overlap=0.5))["circle"]) == 2
    assert len(select(overlapping, "colors")["circle"]) == 3  # no NMS by default


def test_ties_put_the_later_detection_first_as_geneval_does():
    """GenEval orders a class by np.argsort(scores)[::-1]: among equal scores the later detection comes
    first, and colour and position are judged on that class's top detections only."""
    m = meta("colors", [{"class": "circle", "count": 1, "color": "red"}])  # a photo of a red circle
    blue_then_red = [det("circle", 0, 0, score=1.0, color="blue"), det("circle", 20, 0, score=1.0, color="red")]
    assert verdict(blue_then_red, m) == (True, "")
    assert verdict(blue_then_red[::-1], m) == (False, "expected red circle>=1, found 0 red; and 1 blue")
    # A higher score still comes first, wherever it is.
    red_then_blue = [det("circle", 0, 0, score=1.0, color="red"), det("circle", 20, 0, score=0.99, color="blue")]
    assert verdict(red_then_blue, m) == (True, "")
    # The order is within the class: other classes' detections in between do not matter.
    m2 = meta(
        "position",
        [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}],
    )
    left, right = det("square", 0, 0, score=1.0), det("square", 20, 0, score=1.0)
    circle = det("circle", 10, 0)
    assert verdict([left, circle, right], m2) == (True, "")  # target: the later square, right of the circle
    assert verdict([right, circle, left], m2) == (False, "expected circle left of target, found right of target")
    a, b, c, d = (det("circle", 12 * i, 0, score=s) for i, s in enumerate((1.0, 0.9, 1.0, 1.0)))
    assert select([a, b, c, d], "colors")["circle"] == [d, c, a, b]


def _official_order(ranked: list[int], scores: np.ndarray, threshold: float, max_objects: int = 16) -> list[int]:
    """evaluate_image after its argsort: threshold (> threshold), then the cap (no NMS by default)."""
    return [i for i in ranked if scores[i] > threshold][:max_objects]


def _tied_arrays(rng, sizes, per_size=4):
    """float32 score arrays (mmdet's dtype) with many ties: values drawn from a handful."""
    values = np.array([0.2, 0.5, 0.95, 1.0], np.float32)
    return [rng.choice(values, size=n) for n in sizes for _ in range(per_size)]


def _select_indices(scores: np.ndarray, tag: str, rng) -> list[int]:
    """`select`'s order for one class, as indices into `scores`; another class's detections in between."""
    dets = [Detection("circle", (float(i), 0.0, i + 10.0, 10.0), float(s), "red") for i, s in enumerate(scores)]
    for _ in range(len(dets) // 2):
        dets.insert(int(rng.integers(len(dets) + 1)), det("square", 0, 0, score=1.0))
    return [int(d.box[0]) for d in select(dets, tag).get("circle", [])]


def test_select_order_is_reversed_stable_argsort_on_ties():
    rng = np.random.default_rng(0)
    for scores in _tied_arrays(rng, range(1, 25)):
        ranked = np.argsort(scores, kind="stable")[::-1].tolist()
        for tag, threshold in (("colors", 0.3), ("counting", 0.9)):
            assert _select_indices(scores, tag, rng) == _official_order(ranked, scores, threshold), scores


# evaluate_image's ordering line, run on the score column of an mmdet-style (n, 5) float32 array.
_ARGSORT = """
import json, sys
import numpy as np
try:
    from numpy._core import _multiarray_umath as umath
except ImportError:
    from numpy.core import _multiarray_umath as umath
orders = []
for scores in json.load(sys.stdin):
    bbox = np.zeros((len(scores), 5), np.float32)
    bbox[:, 4] = scores
    orders.append(np.argsort(bbox[:, 4])[::-1].tolist())
active = [f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f)]
json.dump({"orders": orders, "active": active}, sys.stdout)
"""


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="SIMD sorts switched off on x86")
def test_select_order_matches_numpy_argsort_reversed():
    """`select` against GenEval's own line, np.argsort(scores)[::-1], on tied arrays of up to 16 scores.

    GenEval pins numpy 1.23.1, whose argsort sorts up to 16 elements by insertion sort (ties stay in
    index order). Newer numpy sends argsort on x86 to a SIMD sort that keeps ties in no fixed order from
    4 elements on (measured: 2.4.6, AVX-512 and AVX2 paths), so the line runs in a child numpy with its
    SIMD dispatch switched off (NPY_DISABLE_CPU_FEATURES): numpy's scalar sort, the one 1.23 runs.
    """
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:
        from numpy.core import _multiarray_umath as umath
    simd = [f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f)]
    rng = np.random.default_rng(1)
    arrays = _tied_arrays(rng, range(1, 17))
    env = dict(os.environ, NPY_DISABLE_CPU_FEATURES=" ".join(simd))
    child = subprocess.run([sys.executable, "-c", _ARGSORT], input=json.dumps([a.tolist() for a in arrays]),
                           capture_output=True, text=True, env=env, check=True)  # fmt: skip
    reply = json.loads(child.stdout)
    assert reply["active"] == [], reply["active"]
    for scores, ranked in zip(arrays, reply["orders"], strict=True):
        for tag, threshold in (("colors", 0.3), ("counting", 0.9)):
            assert _select_indices(scores, tag, rng) == _official_order(ranked, scores, threshold), scores


def test_summary_is_mean_of_tag_means():
    rows = [{"tag": "a", "correct": True}, {"tag": "a", "correct": False}, {"tag": "b", "correct": True}]
    assert summarize(rows) == {"overall": 0.75, "per_tag": {"a": 0.5, "b": 1.0}, "n_images": 3}


def test_partial_credit_is_one_exactly_when_correct():
    rng = np.random.default_rng(0)
    prompts = [m for _, m in enumerate_prompts(("circle", "square", "triangle", "cross"), range(2, 5))]
    colors = ["red", "blue", "green"]
    seen_correct = seen_wrong = 0
    for i in range(3000):
        m = prompts[rng.integers(len(prompts))]
        wanted = [c for c in m["include"] for _ in range(c["count"])]
        dets = []
        for c in wanted:
            if rng.random() < 0.15:
                continue  # dropped
            cls = c["class"] if rng.random() > 0.1 else "circle"
            color = c.get("color", "red") if rng.random() > 0.15 else str(rng.choice(colors))
            x, y = (float(v) for v in rng.uniform(0, 22, size=2))
            dets.append(Detection(cls, (x, y, x + 10, y + 10), float(rng.uniform(0.5, 1)), color))
        detected = select(dets, m["tag"])
        correct, _ = evaluate(detected, m)
        credit = partial_credit(detected, m)
        assert 0.0 <= credit <= 1.0
        assert (credit == 1.0) == correct, (i, m, dets)
        seen_correct += correct
        seen_wrong += not correct
    assert seen_correct > 100 and seen_wrong > 100


def test_partial_credit_orders_better_images_higher():
    m = meta("counting", [{"class": "circle", "count": 3}], [{"class": "circle", "count": 4}])
    one, two, three = ([det("circle", 12 * i, 0) for i in range(n)] for n in (1, 2, 3))
    credits = [partial_credit(select(d, "counting"), m) for d in (one, two, three)]
    assert credits[0] < credits[1] < credits[2] == 1.0
    five = [det("circle", 6 * i, 0) for i in range(5)]
    assert partial_credit(select(five, "counting"), m) == pytest.approx((1 + 3 / 5) / 2)


def test_small_tags_get_more_images_per_prompt():
    from elborl.evaluation import images_per_prompt_by_tag

    rows = [{"tag": "single_object"}] + [{"tag": "counting"}] * 3 + [{"tag": "color_attr"}] * 200
    assert images_per_prompt_by_tag(rows, 1, 32) == {"single_object": 32, "counting": 11, "color_attr": 1}
    assert images_per_prompt_by_tag(rows, 4, 0) == {"single_object": 4, "counting": 4, "color_attr": 4}


def test_off_target_splits_border_drift_into_edge_objects_and_tint():
    from elborl.evaluation import off_target

    grey = (128, 128, 128)
    clean = np.full((2, 8, 8, 3), 128, np.uint8)  # (B, H, W, 3)
    assert off_target(clean, grey) == {"background_drift": 0.0, "border_objects": 0.0, "background_tint": 0.0,
                                       "pixel_std": 0.0}  # fmt: skip
    edge = clean.copy()
    edge[:, 0, :] = 255  # an object along the top edge: 12 of the 64 strip pixels (corners lie in two strips)
    tinted = np.full((2, 8, 8, 3), 138, np.uint8)  # the whole canvas 10 levels off: under the object tolerance
    e, t = off_target(edge, grey), off_target(tinted, grey)
    assert e["border_objects"] == pytest.approx(12 / 64) and e["background_tint"] == 0.0
    assert t["border_objects"] == 0.0 and t["background_tint"] == pytest.approx(10 / 255, rel=1e-5)
    assert e["background_drift"] == pytest.approx(12 / 64 * 127 / 255, rel=1e-5)
