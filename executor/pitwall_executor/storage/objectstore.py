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
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pitwall.errors import DataError

if TYPE_CHECKING:
    from pitwall_executor.storage.s3 import S3ObjectStore

__all__ = [
    "ChecksumMismatchError",
    "LocalObjectStore",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectStoreError",
    "check_key",
    "open_store",
    "sha256_bytes",
    "sha256_file",
]

_HASH_BLOCK = 1 << 20


class ObjectStoreError(DataError):
    """The store could not be reached or kept failing after retries."""


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


class LocalObjectStore:
    """Objects as files under ``root`` (a catalog directory is one, as it is)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = self.root.resolve().as_uri()

    def path(self, key: str) -> Path:
        """The file holding ``key``: reading it in place costs no copy."""
        return self.root / check_key(key)

    def _existing(self, key: str) -> Path:
        path = self.path(key)
        if not path.is_file():
            raise ObjectNotFoundError(f"no object {key!r} in {self.url}")
        return path

    def get(self, key: str, *, sha256: str | None = None) -> bytes:
        """See :meth:`ObjectStore.get`."""
        data = self._existing(key).read_bytes()
        if sha256 is not None and (actual := sha256_bytes(data)) != sha256:
            raise mismatch(f"object {key!r} in {self.url}", sha256, actual)
        return data

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """See :meth:`ObjectStore.get_range`."""
        if start < 0 or end < start:
            raise ValueError(f"bad range [{start}, {end})")
        with self._existing(key).open("rb") as fh:
            fh.seek(start)
            return fh.read(end - start)

    def get_to_file(self, key: str, dest: Path, *, size: int | None = None,
                    sha256: str | None = None) -> int:
        """See :meth:`ObjectStore.get_to_file`."""
        shutil.copyfile(self._existing(key), dest)
        if sha256 is not None and (actual := sha256_file(dest)) != sha256:
            raise mismatch(f"object {key!r} in {self.url}", sha256, actual)
        return dest.stat().st_size

    def put(self, key: str, data: bytes | Path, *, sha256: str | None = None) -> str:
        """See :meth:`ObjectStore.put`; atomic (temp file, fsync, rename)."""
        final = self.path(key)
        actual = sha256_file(data) if isinstance(data, Path) else sha256_bytes(data)
        if sha256 is not None and actual != sha256:
            raise mismatch(f"source of {key!r}", sha256, actual)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".tmp-{uuid.uuid4().hex}"
        try:
            if isinstance(data, Path):
                shutil.copyfile(data, tmp)
            else:
                tmp.write_bytes(data)
            with tmp.open("rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(final.parent)
        return actual

    def exists(self, key: str) -> bool:
        """See :meth:`ObjectStore.exists`."""
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        """See :meth:`ObjectStore.size`."""
        return self._existing(key).stat().st_size

    def list_keys(self, prefix: str) -> list[str]:
        """See :meth:`ObjectStore.list_keys`; temp files of writes in flight are skipped."""
        if not self.root.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in keys if k.startswith(prefix) and "/.tmp-" not in f"/{k}")

    def list_prefixes(self, prefix: str) -> list[str]:
        """See :meth:`ObjectStore.list_prefixes`."""
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        return sorted(f"{prefix}{p.name}/" for p in base.iterdir() if p.is_dir())

    def close(self) -> None:
        """Nothing to release."""


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
        from pitwall_executor.storage.s3 import S3ObjectStore

        return S3ObjectStore.from_url(text, endpoint_url=endpoint_url, region=region)
    if text.startswith("file://"):
        return LocalObjectStore(Path(text.removeprefix("file://")))
    if "://" in text:
        raise DataError(f"{text!r}: the lake must be an s3:// URL, a file:// URL or a path")
    return LocalObjectStore(Path(text))
