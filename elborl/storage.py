"""Paths that may be local or `s3://` (fsspec / s3fs): read, write (atomically), list, copy folders.

S3 settings come from the `storage` params section or the environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL). A local write goes through a temp file + rename; an S3
PUT is atomic by nature (the object appears whole or not at all).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import fsspec

from elborl.errors import UserError
from elborl.io import atomic_write_bytes


@dataclass(frozen=True)
class StorageOptions:
    """How to reach S3.

    Args:
        endpoint_url: S3-compatible endpoint (None = AWS_ENDPOINT_URL or AWS itself).
        key: Access key (None = AWS_ACCESS_KEY_ID / the usual credential chain).
        secret: Secret key (None = AWS_SECRET_ACCESS_KEY / the chain).
        connect_timeout: Seconds before a connection attempt fails.
        retries: Attempts per request (botocore's max_attempts).
    """

    endpoint_url: str | None = None
    key: str | None = None
    secret: str | None = None
    connect_timeout: float = 5.0
    retries: int = 3

    def fsspec_kwargs(self) -> dict:
        endpoint = self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        kwargs: dict = {
            "config_kwargs": {"connect_timeout": self.connect_timeout, "retries": {"max_attempts": self.retries}},
            "skip_instance_cache": True,
        }
        if endpoint:
            kwargs["client_kwargs"] = {"endpoint_url": endpoint}
        if self.key:
            kwargs["key"], kwargs["secret"] = self.key, self.secret
        return kwargs


def is_remote(url: str | Path) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def filesystem(url: str | Path, options: StorageOptions | None = None):
    """(fsspec filesystem, path within it) for a local path or URL."""
    url = str(url)
    if not is_remote(url):
        return fsspec.filesystem("file"), url
    protocol = url.split("://", 1)[0]
    kwargs = (options or StorageOptions()).fsspec_kwargs() if protocol == "s3" else {}
    fs, path = fsspec.core.url_to_fs(url, **kwargs)
    return fs, path


def _remote_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean the storage could not be reached (botocore's are not OSErrors)."""
    try:
        from botocore.exceptions import BotoCoreError
    except ImportError:  # pragma: no cover - s3fs always brings botocore
        return (OSError,)
    return (OSError, BotoCoreError)


class StorageUnreachable(UserError):
    """The storage endpoint did not answer (after the client's bounded retries): a transient fault."""


def _unreachable(url: str, options: StorageOptions | None, err: Exception) -> StorageUnreachable:
    endpoint = (options or StorageOptions()).endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"
    return StorageUnreachable(f"{url}: cannot reach the storage at {endpoint} ({err.__class__.__name__}: {err})")


def write_bytes(url: str | Path, data: bytes, options: StorageOptions | None = None) -> None:
    """Write a whole object/file; readers never see half of it."""
    if not is_remote(url):
        atomic_write_bytes(url, data)
        return
    fs, path = filesystem(url, options)
    try:
        fs.pipe_file(path, data)
    except _remote_errors() as err:
        raise _unreachable(str(url), options, err) from None


def read_bytes(url: str | Path, options: StorageOptions | None = None) -> bytes:
    fs, path = filesystem(url, options)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise UserError(f"{url}: not found") from None
    except _remote_errors() as err:
        raise _unreachable(str(url), options, err) from None


def exists(url: str | Path, options: StorageOptions | None = None) -> bool:
    fs, path = filesystem(url, options)
    try:
        return fs.exists(path)
    except _remote_errors() as err:
        raise _unreachable(str(url), options, err) from None


def upload_dir(local: str | Path, url: str, options: StorageOptions | None = None) -> None:
    """Copy a local folder to `url` (files written whole, one by one)."""
    root = Path(local)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        write_bytes(f"{url.rstrip('/')}/{file.relative_to(root).as_posix()}", file.read_bytes(), options)


def download_dir(url: str, local: str | Path, options: StorageOptions | None = None) -> None:
    """Copy the folder at `url` to a local folder (each file written atomically)."""
    fs, path = filesystem(url, options)
    try:
        files = [f for f in fs.find(path) if not f.endswith("/")]
    except _remote_errors() as err:
        raise _unreachable(url, options, err) from None
    for f in files:
        rel = f[len(path.rstrip("/")) + 1 :]
        atomic_write_bytes(Path(local) / rel, fs.cat_file(f))
