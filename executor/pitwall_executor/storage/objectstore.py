"""Where the lake's bytes live: a local folder or an S3 bucket, behind one small contract.

Keys are ``/``-separated paths relative to the store's root (``<dataset>/data/<sha>.parquet``,
``<dataset>/_versions/00000001.json``), so a local catalog directory and a bucket prefix
hold the same layout and a dataset moves between them by copying keys.

Every read that knows the content hash it expects verifies it, and every write records the
hash, because a backtest must read exactly the bytes its pinned version names.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath
from typing import Protocol, runtime_checkable

from pitwall.errors import DataError, InfrastructureError

__all__ = [
    "ChecksumMismatchError",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectStoreError",
    "check_key",
    "sha256_bytes",
    "sha256_file",
]

_HASH_BLOCK = 1 << 20


class ObjectStoreError(DataError, InfrastructureError):
    """The store could not be reached or kept failing after retries."""

    rerun_when = "the object store is reachable again"


class ObjectNotFoundError(ObjectStoreError):
    """No object exists under the key."""


class ChecksumMismatchError(ObjectStoreError):
    """The bytes read or written do not have the content hash they should."""


@runtime_checkable
class ObjectStore(Protocol):
    """A flat namespace of immutable objects (docs/architecture.md §4 ``ObjectStore``)."""

    url: str

    def get(self, key: str, *, sha256: str | None = None) -> bytes:
        """The whole object; with ``sha256``, raise :class:`ChecksumMismatchError` on a mismatch."""
        ...

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` of the object (``end`` past the object is clipped)."""
        ...

    def get_to_file(self, key: str, dest: Path, *, size: int | None = None,
                    sha256: str | None = None) -> int:
        """Write the object into ``dest`` (created or truncated); return its size."""
        ...

    def put(self, key: str, data: bytes | Path, *, sha256: str | None = None) -> str:
        """Store ``data`` (bytes or a file) under ``key``; return its sha256 (hex).

        With ``sha256`` the local bytes are checked against it first, so a corrupt source
        is never uploaded under a good name.
        """
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def size(self, key: str) -> int:
        """Size in bytes of the object under ``key``."""
        ...

    def list_keys(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix``, sorted."""
        ...

    def list_prefixes(self, prefix: str) -> list[str]:
        """The "directories" right under ``prefix`` (which ends with ``/`` or is empty)."""
        ...

    def close(self) -> None:
        """Release connections and threads; the store is unusable afterwards."""
        ...


def check_key(key: str) -> str:
    """``key`` if it is a clean relative path; DataError otherwise (no ``..``, no ``/x``)."""
    parts = PurePosixPath(key).parts
    if not key or key.startswith("/") or ".." in parts or "\\" in key or "//" in key:
        raise DataError(f"object key {key!r} is not a clean relative path")
    return key


def sha256_bytes(data: bytes | bytearray | memoryview) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def mismatch(what: str, expected: str, actual: str) -> ChecksumMismatchError:
    """The error for ``what`` having hash ``actual`` instead of ``expected``."""
    return ChecksumMismatchError(
        f"{what} has sha256 {actual[:16]}… but its version says {expected[:16]}…; the copy is "
        "corrupt or was overwritten. Push the dataset again from a good copy."
    )


def fsync_dir(directory: Path) -> None:
    """Make a rename or link in ``directory`` durable (the entry itself reaches the disk)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
