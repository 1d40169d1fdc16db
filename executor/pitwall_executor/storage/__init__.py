"""Where bytes live: the object store contract (local disk or S3) and the artifact store.

``objectstore.py`` holds the contract, its errors and the hashing helpers;
``filesystem.py`` and ``s3.py`` the two implementations; :func:`open_store` picks one
by URL. ``artifacts.py`` is the result-file store built on them (docs/architecture.md §4).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitwall.errors import DataError
from pitwall_executor.storage.filesystem import LocalObjectStore
from pitwall_executor.storage.objectstore import (
    ChecksumMismatchError,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreError,
    check_key,
    sha256_bytes,
    sha256_file,
)

if TYPE_CHECKING:
    from pitwall_executor.storage.s3 import S3ObjectStore

__all__ = [
    "ChecksumMismatchError",
    "LocalObjectStore",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectStoreError",
    "S3ObjectStore",
    "check_key",
    "open_store",
    "sha256_bytes",
    "sha256_file",
]


def open_store(url: str | Path, *, endpoint_url: str | None = None,
               region: str | None = None) -> LocalObjectStore | S3ObjectStore:
    """The store a URL names: ``s3://bucket/prefix``, ``file:///path`` or a plain path.

    Examples
    --------
    >>> import tempfile
    >>> open_store(tempfile.mkdtemp()).list_keys("")
    []
    """
    text = str(url)
    if text.startswith("s3://"):
        # aiobotocore loads only for an S3 store: a local stack never pays for it.
        from pitwall_executor.storage.s3 import S3ObjectStore

        return S3ObjectStore.from_url(text, endpoint_url=endpoint_url, region=region)
    if text.startswith("file://"):
        return LocalObjectStore(Path(text.removeprefix("file://")))
    if "://" in text:
        raise DataError(f"{text!r}: the lake must be an s3:// URL, a file:// URL or a path")
    return LocalObjectStore(Path(text))


def __getattr__(name: str) -> Any:
    if name == "S3ObjectStore":
        from pitwall_executor.storage.s3 import S3ObjectStore

        return S3ObjectStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
