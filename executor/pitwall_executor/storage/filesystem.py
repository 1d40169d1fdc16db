"""The object store on local disk: objects as files under a root folder."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from pitwall_executor.storage.objectstore import (
    ObjectNotFoundError,
    check_key,
    fsync_dir,
    mismatch,
    sha256_bytes,
    sha256_file,
)


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
