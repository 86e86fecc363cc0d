"""GenEval's scoring rules, independent of any detector (djghosh13/geneval evaluate_images.py).

A detector turns an image into `Detection`s; `select` keeps them the way GenEval does (per class,
by score, above the tag's threshold, at most `max_objects`, optional NMS); `evaluate` applies the
include / colour / position / exclude clauses and returns GenEval's strict verdict and `reason` text;
`partial_credit` is the smoother training reward; `summarize` is summary_scores.py's overall score.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from elborl.config import GenEvalConfig

COLOR_NAMES = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
RELATIONS = ("left of", "right of", "above", "below")

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    """One detected object.

    Args:
        cls: Class name.
        box: [x1, y1, x2, y2] in pixels (y grows downward).
        score: Confidence in [0, 1].
        color: Colour name (one of GenEval's ten), as the detector classified it.
    """

    cls: str
    box: Box
    score: float
    color: str


@dataclass(frozen=True)
class Rules:
    """GenEval's options (defaults as in evaluate_images.py)."""

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0
    position_threshold: float = 0.1

    @classmethod
    def from_config(cls, cfg: GenEvalConfig) -> Rules:
        return cls(cfg.threshold, cfg.counting_threshold, cfg.max_objects, cfg.max_overlap, cfg.position_threshold)


DEFAULT_RULES = Rules()


def _iou(a: Box, b: Box) -> float:
    """GenEval's IoU (pixel-inclusive areas, the +1 convention)."""

    def area(box: Sequence[float]) -> float:
        return max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)

    inter = area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    union = area(a) + area(b) - inter
    return inter / union if union else 0.0


def select(detections: Iterable[Detection], tag: str, rules: Rules = DEFAULT_RULES) -> dict[str, list[Detection]]:
    """Keep detections as GenEval does: per class, ordered by score, score > threshold, capped, NMS.

    The threshold is `counting_threshold` for the `counting` tag and `threshold` otherwise. Among
    equal scores the LATER detection (in the order of `detections`) comes first, as in GenEval's
    `ordering = np.argsort(bbox[index][:, 4])[::-1]` under the numpy its environment.yml pins (1.23.1):
    that argsort sorts a class's scores by insertion sort when there are at most 16 of them, which
    keeps ties in index order, and the reversal puts the later one first (measured with numpy 1.23.5,
    and with numpy 2.4's scalar sort). Colour and position verdicts only look at a class's top-`count`
    detections, so this order decides verdicts when scores tie. Not reproduced: ties in a class of more
    than 16 detections, where numpy's quicksort partitions scramble them; and newer numpy's SIMD argsort
    on x86 (measured: 2.4.6, AVX-512 and AVX2 paths), which leaves ties in no fixed order from 4 on.

    Returns:
        Class -> detections in decreasing score (ties: later detection first); classes with none are absent.
    """
    threshold = rules.counting_threshold if tag == "counting" else rules.threshold
    by_class: dict[str, list[Detection]] = {}
    # Decreasing (score, index): the reverse of a stable ascending sort, np.argsort(scores)[::-1] on ties.
    ranked = sorted(enumerate(detections), key=lambda item: (item[1].score, item[0]), reverse=True)
    for _, det in ranked:
        if det.score > threshold:
            by_class.setdefault(det.cls, []).append(det)
    kept: dict[str, list[Detection]] = {}
    for cls, dets in by_class.items():
        order = dets[: rules.max_objects]
        out: list[Detection] = []
        while order:
            best = order.pop(0)
            out.append(best)
            if rules.max_overlap < 1:
                order = [d for d in order if _iou(best.box, d.box) < rules.max_overlap]
        kept[cls] = out
    return kept


def _shrunk_offset(box_a: Box, box_b: Box, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Centre offset A - B, and the same with each axis shrunk toward 0 by threshold x (size_A + size_B)."""
    boxes = np.array([box_a, box_b], dtype=np.float64).reshape(2, 2, 2)  # (object, corner, xy)
    center_a, center_b = boxes.mean(axis=1)  # (2,) each
    dim_a, dim_b = np.abs(boxes[:, 1] - boxes[:, 0])  # (2,) each: width, height
    offset = center_a - center_b
    shrunk = np.maximum(np.abs(offset) - threshold * (dim_a + dim_b), 0) * np.sign(offset)
    return offset, shrunk


def relative_position_scores(box_a: Box, box_b: Box, threshold: float = 0.1) -> dict[str, float]:
    """GenEval's normalised offsets of A relative to B, one per relation; a relation holds above 0.5.

    dx, dy = shrunk offset / ||offset||; `left of` = -dx, `right of` = dx, `above` = -dy, `below` = dy.
    Empty when both shrunk components are below 1e-3 (the boxes are too close to be related).
    """
    offset, shrunk = _shrunk_offset(box_a, box_b, threshold)
    if np.all(np.abs(shrunk) < 1e-3):
        return {}
    dx, dy = shrunk / np.linalg.norm(offset)
    return {"left of": -dx, "right of": dx, "above": -dy, "below": dy}


def relative_position(box_a: Box, box_b: Box, threshold: float = 0.1) -> list[str]:
    """The relations of A to B that hold (GenEval's `relative_position`), in a fixed order."""
    scores = relative_position_scores(box_a, box_b, threshold)
    return [r for r in RELATIONS if scores.get(r, 0.0) > 0.5]


def _color_counts(colors: list[str]) -> str:
    return ", ".join(f"{colors.count(c)} {c}" for c in COLOR_NAMES if c in colors)


def evaluate(detected: dict[str, list[Detection]], metadata: dict, rules: Rules = DEFAULT_RULES) -> tuple[bool, str]:
    """GenEval's strict verdict for one image.

    Include clauses are ANDed: the top-`count` detections of the class must exist, all have the
    clause's colour, and (when count and colour held) every (object, target) pair must stand in the
    clause's relation, the targets being the objects matched by include clause `index`. Exclude
    clauses fail when the class has >= `count` detections.

    Args:
        detected: Output of `select`.
        metadata: GenEval metadata for the image.
        rules: Scoring options (position threshold).

    Returns:
        (correct, reason) with GenEval's reason text (messages joined by newlines, empty if correct).
    """
    correct = True
    reasons: list[str] = []
    matched_groups: list[list[Detection] | None] = []
    for req in metadata.get("include", []):
        cls, count = req["class"], req["count"]
        found = detected.get(cls, [])[:count]
        matched = True
        if len(found) < count:
            matched = False
            reasons.append(f"expected {cls}>={count}, found {len(found)}")
        else:
            if "color" in req:
                colors = [d.color for d in found]
                if colors.count(req["color"]) < count:
                    matched = False
                    reasons.append(
                        f"expected {req['color']} {cls}>={count}, found {colors.count(req['color'])} "
                        f"{req['color']}; and " + _color_counts(colors)
                    )
            if "position" in req and matched:
                relation, target_index = req["position"]
                targets = matched_groups[target_index]
                if targets is None:
                    matched = False
                    reasons.append(f"no target for {cls} to be {relation}")
                else:
                    matched = _check_pairs(found, targets, cls, relation, rules, reasons)
        correct = correct and matched
        matched_groups.append(found if matched else None)
    for req in metadata.get("exclude", []):
        n = len(detected.get(req["class"], []))
        if n >= req["count"]:
            correct = False
            reasons.append(f"expected {req['class']}<{req['count']}, found {n}")
    return correct, "\n".join(reasons)


def _check_pairs(
    found: list[Detection],
    targets: list[Detection],
    cls: str,
    relation: str,
    rules: Rules,
    reasons: list[str],
) -> bool:
    """Every (object, target) pair must hold `relation`; the first failing pair adds GenEval's reason."""
    for obj in found:
        for target in targets:
            rels = relative_position(obj.box, target.box, rules.position_threshold)
            if relation not in rels:
                reasons.append(f"expected {cls} {relation} target, found {' and '.join(rels)} target")
                return False
    return True


def partial_credit(detected: dict[str, list[Detection]], metadata: dict, rules: Rules = DEFAULT_RULES) -> float:
    """Training reward in [0, 1]; exactly 1.0 iff `evaluate` says correct.

    Credit is the mean over checks, one check per include clause part and exclude clause:
    - count: min(found, count) / count for the clause's top-`count` detections;
    - colour (when the clause names one): share of those detections with the right colour, over `count`;
    - position (when the clause has one): share of (object, target) pairs in the right relation, the
      targets being the top detections of the target clause (0 when either side has no detection);
    - exclude {class, count}: 1 when fewer than `count` detections, else (count - 1) / found.
    Every failing strict clause has a check below 1, so the reward is 1 only for correct images.
    """
    checks: list[float] = []
    tops = [detected.get(req["class"], [])[: req["count"]] for req in metadata.get("include", [])]
    for req, found in zip(metadata.get("include", []), tops, strict=True):
        count = req["count"]
        checks.append(min(len(found), count) / count)
        if "color" in req:
            checks.append(sum(d.color == req["color"] for d in found) / count)
        if "position" in req:
            relation, target_index = req["position"]
            targets = tops[target_index]
            pairs = [(o, t) for o in found for t in targets]
            ok = sum(relation in relative_position(o.box, t.box, rules.position_threshold) for o, t in pairs)
            # Missing objects count as failed pairs, so drawing fewer objects never earns more credit.
            checks.append(ok / (count * max(len(targets), metadata["include"][target_index]["count"])))
    for req in metadata.get("exclude", []):
        n = len(detected.get(req["class"], []))
        checks.append(1.0 if n < req["count"] else (req["count"] - 1) / n)
    return float(np.mean(checks)) if checks else 1.0


def summarize(rows: Iterable[dict]) -> dict:
    """GenEval's summary (summary_scores.py): per-tag mean correctness; overall = mean of tag means.

    Args:
        rows: Result rows with at least `tag` and `correct`.

    Returns:
        {"overall", "per_tag": {tag: score}, "n_images"}; tags with no image are left out.
    """
    per_tag: dict[str, list[bool]] = {}
    for row in rows:
        per_tag.setdefault(row["tag"], []).append(bool(row["correct"]))
    means = {tag: float(np.mean(v)) for tag, v in sorted(per_tag.items())}
    overall = float(np.mean(list(means.values()))) if means else 0.0
    return {"overall": overall, "per_tag": means, "n_images": sum(len(v) for v in per_tag.values())}
