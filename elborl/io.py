"""Atomic file writes: a temp file in the same folder, then a rename, so readers never see half a file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` via a temp file + rename (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a folder beside `path` (yielded), then swap it in: readers see the old or the new one, and
    a kill at any moment leaves one of them (the old one renamed aside is put back by the next call).

    Example: `with atomic_dir(out / "model") as tmp: model.save_pretrained(tmp)`.
    """
    path = Path(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    if old.exists() and not path.exists():  # a kill between the two renames below: the old one is the folder
        old.rename(path)
    yield tmp
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)  # never delete before the new folder is in place: a kill leaves `old` to recover
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: str | Path, obj: object) -> None:
    """Pretty JSON, written atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """One JSON object a line, written atomically."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Save a uint8 (H, W, 3) array as PNG, atomically."""
    import io

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
