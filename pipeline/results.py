"""Where Prefect persists task results (the cache of finished epochs): local disk or S3."""

from __future__ import annotations

import hashlib
from pathlib import Path

from elborl import storage
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
