"""GenEval's files: metadata JSONL (validated) and the image folder layout.

Layout (what GenEval's generator writes and its scorer reads):
    <out>/00000/metadata.jsonl     ONE JSON object: the prompt's metadata
    <out>/00000/samples/0000.png   its images
Only all-digit folder names and images named like `0000.png` count, as in GenEval.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from elborl.errors import UserError
from elborl.io import atomic_write_text, save_png
from elborl.rewards.geneval import COLOR_NAMES, RELATIONS, TAGS

IMAGE_NAME = re.compile(r"\d+\.png")


def _read_utf8(path: Path) -> str:
    """A text file's contents; bytes that are not UTF-8 are a UserError naming the file and line."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = err.object.count(b"\n", 0, err.start) + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {err.object[err.start]:#04x})") from None


def _check_clause(clause: object, where: str, kind: str, index: int, n_before: int) -> None:
    if not isinstance(clause, dict):
        raise UserError(f"{where}: {kind}[{index}]: expected an object, found {clause!r}")
    extra = set(clause) - {"class", "count", "color", "position"}
    if extra:
        raise UserError(f"{where}: {kind}[{index}]: unknown key(s) {sorted(extra)}")
    if not isinstance(clause.get("class"), str) or not clause["class"]:
        raise UserError(f"{where}: {kind}[{index}].class: expected a class name, found {clause.get('class')!r}")
    count = clause.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise UserError(f"{where}: {kind}[{index}].count: expected an integer >= 1, found {count!r}")
    if "color" in clause and clause["color"] not in COLOR_NAMES:
        raise UserError(
            f"{where}: {kind}[{index}].color: expected one of {', '.join(COLOR_NAMES)}, found {clause['color']!r}"
        )
    if "position" in clause:
        pos = clause["position"]
        ok = (
            isinstance(pos, list) and len(pos) == 2 and pos[0] in RELATIONS
            and isinstance(pos[1], int) and not isinstance(pos[1], bool) and 0 <= pos[1] < n_before
        )  # fmt: skip
        if not ok:
            raise UserError(
                f"{where}: {kind}[{index}].position: expected [relation, index of an earlier include clause] "
                f"with relation one of {', '.join(RELATIONS)}, found {pos!r}"
            )


#: Tags of prompts that other rewards judge (no GenEval clauses): the ocr set's `{"tag": "ocr", "prompt", "text"}`.
PROMPT_ONLY_TAGS = ("ocr",)


def geneval_rows(rows: list[dict]) -> list[dict]:
    """The rows GenEval can judge (its six tags); prompt sets of other rewards have none."""
    return [m for m in rows if m["tag"] in TAGS]


def validate_metadata(meta: object, where: str) -> dict:
    """Check one GenEval metadata object; `where` (file:line) prefixes any error.

    Raises:
        UserError: Not an object, missing/unknown keys, unknown tag, malformed clauses.
    """
    if not isinstance(meta, dict):
        raise UserError(f"{where}: expected a JSON object, found {type(meta).__name__}")
    if meta.get("tag") in PROMPT_ONLY_TAGS:  # e.g. the ocr reward's prompts: no GenEval clauses to judge
        for key in ("prompt", "text"):
            if not isinstance(meta.get(key), str) or not meta[key]:
                raise UserError(f"{where}: {key}: expected a non-empty string for a {meta['tag']!r} prompt, "
                                f"found {meta.get(key)!r}")  # fmt: skip
        return meta
    for key in ("tag", "include", "prompt"):
        if key not in meta:
            raise UserError(f"{where}: missing key '{key}'")
    if meta["tag"] not in TAGS:
        raise UserError(f"{where}: tag: expected one of {', '.join((*TAGS, *PROMPT_ONLY_TAGS))}, found {meta['tag']!r}")
    if not isinstance(meta["prompt"], str) or not meta["prompt"]:  # GenEval's prompts are never empty
        raise UserError(f"{where}: prompt: expected a non-empty string, found {meta['prompt']!r}")
    for kind in ("include", "exclude"):
        clauses = meta.get(kind, [])
        if not isinstance(clauses, list) or (kind == "include" and not clauses):
            raise UserError(f"{where}: {kind}: expected a non-empty list of clauses, found {clauses!r}")
        for i, clause in enumerate(clauses):
            _check_clause(clause, where, kind, i, i if kind == "include" else 0)
    return meta


def read_metadata_jsonl(path: str | Path) -> list[dict]:
    """Read a GenEval metadata file: one JSON object a line (blank lines skipped).

    Raises:
        UserError: Missing file, or a line that is not valid JSON / valid metadata (names file:line).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: metadata file not found")
    rows = []
    for lineno, line in enumerate(_read_utf8(path).split("\n"), start=1):  # not splitlines: U+2028 is JSON text
        if not line.strip():
            continue
        try:
            meta = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno})") from None
        except RecursionError:
            raise UserError(f"{path}:{lineno}: not valid JSON (nested too deeply)") from None
        rows.append(validate_metadata(meta, f"{path}:{lineno}"))
    if not rows:
        raise UserError(f"{path}: no metadata lines")
    return rows


def metadata_classes(rows: list[dict]) -> set[str]:
    """Every class named by include or exclude clauses."""
    return {c["class"] for m in rows for kind in ("include", "exclude") for c in m.get(kind, [])}


def write_layout(
    out: str | Path,
    rows: list[dict],
    images_per_prompt: int | list[int],
    make_images: Callable[[int, dict], list[np.ndarray]],
) -> None:
    """Write GenEval's folder layout, prompt by prompt.

    Args:
        out: Output folder.
        rows: Metadata, one per prompt (folder i = row i).
        images_per_prompt: Images to make for each prompt (or a count per prompt).
        make_images: (prompt index, metadata) -> that many uint8 (H, W, 3) images.
    """
    out = Path(out)
    counts = images_per_prompt if isinstance(images_per_prompt, list) else [images_per_prompt] * len(rows)
    for i, meta in enumerate(rows):
        folder = out / f"{i:05d}"
        images = make_images(i, meta)
        if len(images) != counts[i]:
            raise ValueError(f"expected {counts[i]} images for prompt {i}, got {len(images)}")
        for j, image in enumerate(images):
            save_png(folder / "samples" / f"{j:04d}.png", image)
        # Metadata last: a folder with metadata is a complete folder.
        atomic_write_text(folder / "metadata.jsonl", json.dumps(meta) + "\n")


@dataclass(frozen=True)
class PromptFolder:
    """One prompt's folder of a GenEval layout."""

    path: Path
    metadata: dict
    images: list[Path]


def iter_layout(root: str | Path) -> Iterator[PromptFolder]:
    """Walk a GenEval layout: all-digit folders in order, each with metadata and `\\d+.png` images.

    Raises:
        UserError: Missing root, no prompt folder, a folder without metadata.jsonl or samples/.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: image folder not found")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit())
    if not folders:
        raise UserError(f"{root}: no prompt folders (expected 00000/, 00001/, ... as GenEval writes)")
    for folder in folders:
        meta_path = folder / "metadata.jsonl"
        if not meta_path.is_file():
            raise UserError(f"{meta_path}: metadata file not found")
        try:
            meta = json.loads(_read_utf8(meta_path))
        except json.JSONDecodeError as err:
            raise UserError(f"{meta_path}: not valid JSON ({err.msg} at line {err.lineno})") from None
        except RecursionError:
            raise UserError(f"{meta_path}: not valid JSON (nested too deeply)") from None
        validate_metadata(meta, str(meta_path))
        samples = folder / "samples"
        if not samples.is_dir():
            raise UserError(f"{samples}: samples folder not found")
        images = sorted(p for p in samples.iterdir() if p.is_file() and IMAGE_NAME.fullmatch(p.name))
        yield PromptFolder(folder, meta, images)


def load_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """Load an image as uint8 RGB (H, W, 3).

    Args:
        path: Image file.
        size: When given, the expected side in pixels.

    Raises:
        UserError: Not a readable image, or not size x size.
    """
    try:
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise UserError(f"{path}: not a readable image ({err.__class__.__name__})") from None
    if size is not None and image.shape[:2] != (size, size):
        raise UserError(
            f"{path}: expected a {size}x{size} image (the world's size), found {image.shape[1]}x{image.shape[0]}"
        )
    return image
