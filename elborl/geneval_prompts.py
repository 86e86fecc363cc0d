"""GenEval's prompts over COCO: the official 553 test prompts and a generated, scene-disjoint train set.

The train set uses GenEval's own six templates (djghosh13/geneval prompts/create_prompts.py) over COCO's
80 classes, with GenEval's ten colours, four relations and counts 2-4, and no colour on "person" (GenEval
writes no "[colour] person" prompt). A train prompt never describes a test scene: same tag and same set of
include clauses, whatever the order of the objects ("a dog and a cat" = "a cat and a dog") or the
direction of the relation ("a dog left of a cat" = "a cat right of a dog").

Wording follows GenEval's generator: "a"/"an" by the first letter, number words, and its naive plural
(+"es" after "s", else +"s"), so the train set writes every plural exactly as the official file does
("persons", "sheeps", "benchs"). The four classes absent from the official counting prompts for which that
rule is not English ("couchs", "computer mouses", "skises", "scissorses") get English plurals instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from elborl.geneval_io import read_metadata_jsonl
from elborl.rewards.geneval import COLOR_NAMES, RELATIONS, TAGS
from elborl.world.prompts import NUMBERS, _a, _clause

GENEVAL_DIR = Path(__file__).resolve().parents[1] / "assets" / "geneval"
#: Train prompts by default: an equal share per tag where the tag has that many free scenes, the rest
#: spread over the tags that do (see `coco_train_prompts`).
DEFAULT_TRAIN_SIZE = 5000
COUNTS = (2, 3, 4)
#: English plurals where GenEval's rule is not English, for classes absent from its official counting prompts.
PLURAL_FIXES = {"couch": "couches", "computer mouse": "computer mice", "skis": "skis", "scissors": "scissors"}
_MIRROR = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def official_test_prompts(path: str | Path = GENEVAL_DIR / "evaluation_metadata.jsonl") -> list[dict]:
    """GenEval's official evaluation prompts (553 metadata rows), validated.

    Args:
        path: GenEval's `evaluation_metadata.jsonl` (default: the copy in `assets/geneval`).
    """
    return read_metadata_jsonl(path)


def coco_classes(path: str | Path = GENEVAL_DIR / "object_names.txt") -> list[str]:
    """COCO's 80 class names in GenEval's order (its `object_names.txt`).

    Args:
        path: The class list, one name a line.
    """
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def coco_plural(name: str) -> str:
    """Plural of a COCO class as GenEval writes it ("bus" -> "buses", "person" -> "persons").

    Args:
        name: A COCO class name.
    """
    return PLURAL_FIXES.get(name) or (name + "es" if name.endswith("s") else name + "s")


def scene_key(meta: dict) -> tuple:
    """What a prompt asks for, independent of wording: its tag and its set of include clauses.

    A position scene is read in one direction ("B right of A" is keyed as "A left of B").

    Args:
        meta: GenEval metadata ({tag, include, [exclude], prompt}).
    """
    include = meta["include"]
    if meta["tag"] == "position":
        (ref, obj), rel = include, include[1]["position"][0]
        first, second = (obj, ref) if rel in ("left of", "above") else (ref, obj)
        return ("position", first["class"], rel if rel in ("left of", "above") else _MIRROR[rel], second["class"])
    clauses = sorted((c["class"], c["count"], c.get("color") or "") for c in include)
    return (meta["tag"], *clauses)


def _make(tag: str, classes: list[str], idx: tuple[int, ...]) -> dict | None:
    """Metadata for one point of a tag's parameter grid, worded as GenEval words it (None: not a prompt)."""
    if tag == "single_object":
        c = classes[idx[0]]
        return {"tag": tag, "include": [_clause(c)], "prompt": f"a photo of {_a(c)}"}
    if tag == "counting":
        c, n = classes[idx[0]], COUNTS[idx[1]]
        return {"tag": tag, "include": [_clause(c, n)], "exclude": [_clause(c, n + 1)],
                "prompt": f"a photo of {NUMBERS[n]} {coco_plural(c)}"}  # fmt: skip
    if tag == "colors":
        c, col = classes[idx[0]], COLOR_NAMES[idx[1]]
        if c == "person":
            return None
        return {"tag": tag, "include": [_clause(c, color=col)], "prompt": f"a photo of {_a(col)} {c}"}
    a, b = classes[idx[0]], classes[idx[1]]
    if a == b:
        return None
    if tag == "two_object":
        return {"tag": tag, "include": [_clause(a), _clause(b)], "prompt": f"a photo of {_a(a)} and {_a(b)}"}
    if tag == "position":
        rel = RELATIONS[idx[2]]
        return {"tag": tag, "include": [_clause(b), _clause(a, position=[rel, 0])],
                "prompt": f"a photo of {_a(a)} {rel} {_a(b)}"}  # fmt: skip
    ca, cb = COLOR_NAMES[idx[2]], COLOR_NAMES[idx[3]]
    if ca == cb or "person" in (a, b):
        return None
    return {"tag": tag, "include": [_clause(a, color=ca), _clause(b, color=cb)],
            "prompt": f"a photo of {_a(ca)} {a} and {_a(cb)} {b}"}  # fmt: skip


def _grid_shape(tag: str, n_classes: int) -> tuple[int, ...]:
    n_colors, n_rel = len(COLOR_NAMES), len(RELATIONS)
    return {
        "single_object": (n_classes,), "two_object": (n_classes, n_classes), "counting": (n_classes, len(COUNTS)),
        "colors": (n_classes, n_colors), "position": (n_classes, n_classes, n_rel),
        "color_attr": (n_classes, n_classes, n_colors, n_colors),
    }[tag]  # fmt: skip


def _free_prompts(tag: str, classes: list[str], taken: set[tuple], rng: np.random.Generator) -> Iterator[dict]:
    """A tag's prompts in a seeded random order, skipping every prompt whose scene is in `taken`."""
    shape = _grid_shape(tag, len(classes))
    order = np.stack(np.unravel_index(rng.permutation(int(np.prod(shape))), shape), axis=1)
    metas = (_make(tag, classes, tuple(row.tolist())) for row in order)
    return (m for m in metas if m is not None and scene_key(m) not in taken)


def _draw(streams: dict[str, Iterator[dict]], size: int) -> dict[str, list[dict]]:
    """`size` prompts, equal shares per tag; a tag that runs out leaves its share to the others."""
    out: dict[str, list[dict]] = {t: [] for t in streams}
    open_tags = list(streams)
    while open_tags and (left := size - sum(map(len, out.values()))) > 0:
        shares = [left // len(open_tags) + (i < left % len(open_tags)) for i in range(len(open_tags))]
        for tag, share in zip(list(open_tags), shares, strict=True):
            got = list(itertools.islice(streams[tag], share))
            out[tag].extend(got)
            if len(got) < share:
                open_tags.remove(tag)
    return out


def coco_train_prompts(
    test_rows: list[dict],
    seed: int,
    size: int = 0,
    classes: list[str] | None = None,
) -> list[dict]:
    """Train prompts from GenEval's templates over COCO's classes, scene-disjoint from `test_rows`.

    Each tag gets an equal share of `size` (distinct prompts, drawn uniformly from the tag's prompts whose
    scene no test prompt describes); a tag with fewer free prompts gives all it has and its shortfall is
    spread over the other tags. Against GenEval's 553 official prompts with the default 5000:
    single_object 0 (the test set holds all 80 classes), counting 160 (every free scene), colors 696 (every
    free scene), two_object / position / color_attr 1381-1382 each. Training still sees these five tags
    equally often: rollouts draw a tag first, then a prompt of that tag.

    Args:
        test_rows: The test prompts (GenEval metadata) whose scenes the train set must avoid.
        seed: Seed of numpy's `default_rng`; the same seed gives the same list.
        size: Number of train prompts (0 = `DEFAULT_TRAIN_SIZE`); fewer when the free prompts run out.
        classes: Class names (default: COCO's 80 from `assets/geneval/object_names.txt`).

    Returns:
        GenEval metadata dicts ({tag, include, [exclude], prompt}), grouped by tag in GenEval's tag order.
    """
    classes = coco_classes() if classes is None else classes
    rng = np.random.default_rng(seed)
    taken = {scene_key(m) for m in test_rows}
    streams = {tag: _free_prompts(tag, classes, taken, rng) for tag in TAGS}
    drawn = _draw(streams, size or DEFAULT_TRAIN_SIZE)
    return [m for tag in TAGS for m in drawn[tag]]
