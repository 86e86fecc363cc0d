"""GenEval-format prompts over the world's classes, split into disjoint train and test sets.

Every prompt GenEval's six templates can make over the world is enumerated, then grouped by scene:
prompts that describe the same scene ("a circle left of a square" and "a square right of a circle";
"a circle and a square" and "a square and a circle") share a group, and a group goes wholly to train
or wholly to test, so no test scene is ever trained on under another wording.
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Hashable

import numpy as np

from elborl.config import PromptsConfig
from elborl.rewards.geneval import RELATIONS, TAGS
from elborl.world.shapes import plural
from elborl.world.spec import COLORS, WorldSpec

NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
#: Prompts per tag in GenEval's official file: the test set keeps these proportions where it can.
GENEVAL_TAG_COUNTS = {
    "single_object": 80, "two_object": 99, "counting": 80, "colors": 94, "position": 100, "color_attr": 100,
}  # fmt: skip


def _a(word: str) -> str:
    """Indefinite article + word, as GenEval writes it ("an orange circle")."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _clause(cls: str, count: int = 1, color: str | None = None, position: list | None = None) -> dict:
    clause: dict = {"class": cls, "count": count}
    if color is not None:
        clause["color"] = color
    if position is not None:
        clause["position"] = position
    return clause


def enumerate_prompts(classes: tuple[str, ...], counts: range) -> list[tuple[Hashable, dict]]:
    """Every GenEval prompt over `classes`, each with the key of its scene group.

    Args:
        classes: The world's shape classes.
        counts: The numbers used by the `counting` tag.

    Returns:
        (group key, metadata) pairs; metadata is GenEval's {tag, include, [exclude], prompt}.
    """
    out: list[tuple[Hashable, dict]] = []
    colors = list(COLORS)
    for c in classes:
        out.append(((c,), {"tag": "single_object", "include": [_clause(c)], "prompt": f"a photo of {_a(c)}"}))
    for a, b in itertools.permutations(classes, 2):
        meta = {"tag": "two_object", "include": [_clause(a), _clause(b)],
                "prompt": f"a photo of {_a(a)} and {_a(b)}"}  # fmt: skip
        out.append((frozenset((a, b)), meta))
    for c, n in itertools.product(classes, counts):
        meta = {"tag": "counting", "include": [_clause(c, n)], "exclude": [_clause(c, n + 1)],
                "prompt": f"a photo of {NUMBERS[n]} {plural(c)}"}  # fmt: skip
        out.append(((c, n), meta))
    for c, col in itertools.product(classes, colors):
        out.append(((col, c), {"tag": "colors", "include": [_clause(c, color=col)],
                               "prompt": f"a photo of {_a(col)} {c}"}))  # fmt: skip
    for a, b in itertools.permutations(classes, 2):
        for rel in RELATIONS:
            # Scene key: (axis, first object, second object) in reading order (left-to-right, top-down).
            first_is_a = rel in ("left of", "above")
            key = ("h" if "of" in rel else "v", a if first_is_a else b, b if first_is_a else a)
            meta = {"tag": "position", "include": [_clause(b), _clause(a, position=[rel, 0])],
                    "prompt": f"a photo of {_a(a)} {rel} {_a(b)}"}  # fmt: skip
            out.append((key, meta))
    for a, b in itertools.permutations(classes, 2):
        for ca, cb in itertools.permutations(colors, 2):
            meta = {"tag": "color_attr", "include": [_clause(a, color=ca), _clause(b, color=cb)],
                    "prompt": f"a photo of {_a(ca)} {a} and {_a(cb)} {b}"}  # fmt: skip
            out.append((frozenset(((a, ca), (b, cb))), meta))
    return out


def _canonical(key: Hashable) -> str:
    """A process-independent sort key: frozensets iterate in hash order, which changes per process."""
    if isinstance(key, frozenset):
        return "{" + ",".join(sorted(_canonical(k) for k in key)) + "}"
    if isinstance(key, tuple):
        return "(" + ",".join(_canonical(k) for k in key) + ")"
    return repr(key)


def _test_quotas(capacity: dict[str, int], weights: dict[str, int], target: int) -> dict[str, int]:
    """Prompts per tag for the test set: GenEval's proportions, capped by capacity, rest redistributed."""
    total = sum(weights.values())
    quota = {t: min(capacity[t], max(1, round(target * w / total))) for t, w in weights.items()}
    while sum(quota.values()) < target:
        room = [t for t in weights if quota[t] < capacity[t]]
        if not room:
            break
        for t in room:
            if sum(quota.values()) < target:
                quota[t] += 1
    return quota


def make_prompt_sets(spec: WorldSpec, cfg: PromptsConfig) -> tuple[list[dict], list[dict]]:
    """Disjoint train and test prompt sets over the world.

    Per tag, scene groups are shuffled with `cfg.seed`; the test set takes whole groups until it holds
    its share of `cfg.test_size` (GenEval's tag proportions, at most `cfg.max_test_fraction` of the
    tag's prompts, at least one group), and the train set takes the rest (capped at `cfg.train_size`
    when that is not 0, keeping the tags balanced).

    Returns:
        (train, test): lists of GenEval metadata dicts, ordered by tag then shuffled order.
    """
    rng = random.Random(cfg.seed)
    groups: dict[str, dict[Hashable, list[dict]]] = {t: defaultdict(list) for t in TAGS}
    for key, meta in enumerate_prompts(spec.classes, range(cfg.counting_min, cfg.counting_max + 1)):
        groups[meta["tag"]][key].append(meta)
    sizes = {t: sum(len(g) for g in groups[t].values()) for t in TAGS}
    capacity = {t: max(1, int(cfg.max_test_fraction * sizes[t])) for t in TAGS}
    quota = _test_quotas(capacity, GENEVAL_TAG_COUNTS, cfg.test_size)

    train: dict[str, list[dict]] = {}
    test: list[dict] = []
    for tag in TAGS:
        keys = sorted(groups[tag], key=_canonical)  # a stable order before the seeded shuffle
        rng.shuffle(keys)
        taken: list[dict] = []
        rest: list[dict] = []
        for key in keys:
            members = groups[tag][key]
            # Whole groups only; a group never pushes the test share past its quota (but one always fits).
            fits = not taken or len(taken) + len(members) <= quota[tag]
            (taken if fits and len(taken) < quota[tag] else rest).extend(members)
        test.extend(taken)
        train[tag] = rest
    return _cap_train(train, cfg.train_size, rng), test


def _cap_train(train: dict[str, list[dict]], cap: int, rng: random.Random) -> list[dict]:
    """Flatten the per-tag train lists, keeping at most `cap` prompts (0 = all) spread evenly over tags."""
    if cap == 0 or cap >= sum(len(v) for v in train.values()):
        return [m for tag in TAGS for m in train[tag]]
    quota = _test_quotas({t: len(v) for t, v in train.items()}, dict.fromkeys(TAGS, 1), cap)
    return [m for tag in TAGS for m in rng.sample(train[tag], quota[tag])]


def draw_tag_balanced(rows: list[dict], n: int, rng, weights: dict[str, float] | None = None) -> list[dict]:
    """`n` prompts: a tag (uniformly, or in proportion to `weights`), then a prompt of that tag uniformly
    (tags are very unequal in size).

    Args:
        rows: GenEval metadata to draw from.
        n: How many.
        rng: numpy Generator.
        weights: Relative weight of each tag (`train.tag_weights`); a tag not named weighs 1. None or {}
            draws the tags uniformly (the same draws as without weights).
    """
    present = {m["tag"] for m in rows}
    tags = [t for t in TAGS if t in present] + sorted(present - set(TAGS))  # GenEval's order, then others (ocr)
    by_tag = {t: [m for m in rows if m["tag"] == t] for t in tags}
    picks = rng.integers(len(tags), size=n) if not weights else _weighted_tags(tags, weights, n, rng)
    return [by_tag[tags[i]][rng.integers(len(by_tag[tags[i]]))] for i in picks]


def _weighted_tags(tags: list[str], weights: dict[str, float], n: int, rng) -> np.ndarray:
    """`n` indices into `tags`, each drawn with probability proportional to its weight (default 1)."""
    if unknown := sorted(set(weights) - set(tags)):
        raise ValueError(f"train.tag_weights: {unknown} not among the train prompts' tags {tags}")
    w = np.array([weights.get(t, 1.0) for t in tags], dtype=np.float64)
    if w.sum() <= 0:
        raise ValueError(f"train.tag_weights: every tag of the train prompts ({tags}) weighs 0")
    return rng.choice(len(tags), size=n, p=w / w.sum())
