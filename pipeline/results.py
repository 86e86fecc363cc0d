"""Where Prefect persists task results (the cache of finished epochs): local disk or S3, as JSON only.

Trust: the results live beside the checkpoints, possibly in a shared bucket. They are written with
`EpochJSON` and checked by `check_cached_result` before Prefect reads one, so a file that asks for
another serializer (a pickle: code that would run on every machine resuming from the bucket) is refused.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefect.serializers import Serializer
from pydantic import Field

from elborl import storage
from elborl.errors import UserError
from elborl.storage import StorageOptions


def result_storage(url: str, options: StorageOptions | None = None):
    """A Prefect filesystem block rooted at `url` (a local folder or an s3:// URL through s3fs), saved
    on the Prefect server under a name derived from the URL (Prefect wants result storage server-side)."""
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem

    if storage.is_remote(url):
        block = RemoteFileSystem(basepath=url, settings=(options or StorageOptions()).fsspec_kwargs())
    else:
        Path(url).mkdir(parents=True, exist_ok=True)
        block = LocalFileSystem(basepath=str(Path(url).resolve()))
    block.save(f"elborl-results-{hashlib.sha256(url.encode()).hexdigest()[:12]}", overwrite=True)
    return block


class EpochJSON(Serializer):
    """Cached epoch results as plain JSON (metrics, a checkpoint URL, a digest): nothing in them can run
    code when read, unlike Prefect's default cloudpickle."""

    type: str = Field(default="elborl-json", frozen=True)

    def dumps(self, obj: dict) -> bytes:
        return json.dumps(obj).encode()

    def loads(self, blob: bytes) -> dict:
        return json.loads(blob)


def _parses(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


class UntrustedResult(UserError):
    """A cached result file that is not elborl's JSON (e.g. a pickle planted in a shared bucket)."""


def check_cached_result(url: str, options: StorageOptions | None = None) -> None:
    """Refuse a cached result that Prefect would decode with anything but `EpochJSON`.

    Prefect's result file names its own serializer, so a file written by someone else could ask for
    pickle; this runs before Prefect reads it. A missing file is fine (the epoch runs); an empty file or
    a JSON record cut short (a kill during Prefect's non-atomic local write) is removed, and the epoch
    runs again.

    Raises:
        UntrustedResult: Naming the file and what it holds.
    """
    if not storage.exists(url, options):
        return
    data = storage.read_bytes(url, options)
    if not data.strip() or (data.startswith(b'{"metadata"') and not _parses(data)):
        # A write cut short by a kill (Prefect's local writes are not atomic): nothing to trust or to
        # refuse, the epoch is simply computed again.
        fs, path = storage.filesystem(url, options)
        fs.rm(path)
        return
    try:
        record = json.loads(data)
        kind = record["metadata"]["serializer"]["type"]
    except (ValueError, KeyError, TypeError):
        kind = "not a JSON result record"
    if kind != EpochJSON().type:
        raise UntrustedResult(f"{url}: a cached epoch result elborl did not write as JSON ({kind!r}); refused, "
                              "never loaded. Delete the file to recompute that epoch.")  # fmt: skip
