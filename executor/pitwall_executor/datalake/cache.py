"""The worker's file cache (docs/architecture.md §2 step 2): lake files on local disk, by
content hash.

Layout under the cache root::

    data/<sha256>                 a verified, read-only copy of one lake file
    data/<sha256>.g<n>            row group n of that file alone (see group_cache.py)
    data/.part-<sha256>-<pid>-<r> a download in progress (never served)
    locks/<sha256>.lock           flock: shared = in use, exclusive = being filled or evicted
    evict.lock                    the eviction lock
    metrics/                      counters shared by all processes (cache_metrics.py)

Several worker processes may ask for the same file at once: the first takes the key's
lock exclusively and downloads, the others block on it and then find the file. A download
goes to a temp file in the same directory, is fsynced and verified against its sha256,
then renamed into place, so a crash mid-download leaves only a ``.part-`` file that is
never served and is removed by the next filler or eviction. A row group has no hash of its
own: its filler passes a ``verify`` (Parquet page CRCs) checked instead. A file in use holds
a shared lock, which eviction (least recently used first, by mtime, down to ``max_bytes``)
skips.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pitwall.errors import DataError, InfrastructureError
from pitwall_executor.datalake import cache_metrics
from pitwall_executor.storage.objectstore import (
    ChecksumMismatchError,
    fsync_dir,
    sha256_file,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["CacheFullError", "FileCache", "Pin", "Verify"]

_SHA = re.compile(r"^[0-9a-f]{64}$")
_KEY = re.compile(r"^[0-9a-f]{64}(\.g[0-9]+)?$")  # a file, or one row group of it
_MIB = 1 << 20

Fill = Callable[[Path], object]
Verify = Callable[[Path], str | None]
"""Checks a filled temp file of the right size: None when good, else what is wrong."""


class CacheFullError(DataError, InfrastructureError):
    """The files a job needs do not fit in the worker cache."""

    rerun_when = "the worker cache has room for the job (raise cache_mb)"


class _KeyLock:
    """An flock on ``locks/<key>.lock`` that survives the file being unlinked by eviction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self, mode: int, *, blocking: bool = True) -> bool:
        while True:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self.fd, mode | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                return False
            try:
                current = os.stat(self.path).st_ino == os.fstat(self.fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                return True
            # An evictor unlinked the lock file while we waited: our lock guards nothing.
            self.release()

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


@dataclass
class Pin:
    """A cached file held in use: eviction skips it until :meth:`release`."""

    path: Path
    _lock: _KeyLock

    def release(self) -> None:
        """Let eviction reclaim the file again."""
        self._lock.release()


def _size(n: float) -> str:
    """``n`` bytes for a person: 1.5 KiB, 20.0 MiB, 3.2 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} B" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class FileCache:
    """A size-bounded LRU of lake files on local disk, shared by the worker processes."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._data = self.root / "data"
        self._locks = self.root / "locks"
        self._data.mkdir(parents=True, exist_ok=True)
        self._locks.mkdir(parents=True, exist_ok=True)
        self._counters = cache_metrics.SharedCounters(self.root / "metrics")
        self._batch = threading.local()  # counter deltas of a counting_batch(), per thread

    # -- lookups -------------------------------------------------------------------------

    def path_for(self, key: str) -> Path:
        """Where the file with content hash ``key`` (or its row group ``<key>.g<n>``) lives."""
        if not _KEY.match(key):
            raise DataError(f"cache key {key!r} is not a sha256 hex digest (or <sha256>.g<n>)")
        return self._data / key

    def contains(self, key: str, size: int) -> bool:
        """Whether a complete copy is cached now (no lock taken: a hint, not a promise)."""
        try:
            return self.path_for(key).stat().st_size == size
        except FileNotFoundError:
            return False

    def check_fits(self, total: int, what: str) -> None:
        """Raise :class:`CacheFullError` if ``total`` bytes can never fit at once."""
        if total > self.max_bytes:
            need = -(-total // _MIB)
            raise CacheFullError(
                f"{what} needs {_size(total)} of files at once but the worker cache holds at "
                f"most {_size(self.max_bytes)}; raise cache_mb (PITWALL_CACHE_MB) to at least "
                f"{need}, or narrow the universe or date range"
            )

    def acquire(self, key: str, size: int, fill: Fill, *, name: str | None = None,
                verify: Verify | None = None) -> Pin:
        """The cached file for ``key``, filled with ``fill(temp_path)`` on a miss, held in use.

        ``fill`` writes the file's bytes to the path it is given; the result is verified
        against ``size`` and then ``key`` (its sha256), or ``verify`` when the entry has no
        hash of its own (a row group). A bad copy is fetched once more, then
        :class:`DataError` names the file; a bad copy is never kept.
        """
        path = self.path_for(key)
        if verify is None and not _SHA.match(key):
            raise ValueError(f"cache entry {key!r} has no sha256 to check: pass verify")
        self.check_fits(size, f"file {name or key}")
        lock = _KeyLock(self._locks / f"{key}.lock")
        try:
            for _ in range(3):
                lock.acquire(fcntl.LOCK_SH)
                # Absent: fill it, unless another process is. Never *wait* for the
                # exclusive lock: a process that filled the entry meanwhile holds it
                # pinned (shared) until its job's other entries are in, and two processes
                # each pinning what the other waits for deadlock (seen: two readers of
                # the same row groups of three files). Try without blocking; a failed
                # conversion holds nothing (flock converts by unlocking first), so wait
                # for a shared lock (it outlasts only a filler's exclusive one) and look
                # again.
                while not self._present(path, size):
                    if lock.acquire(fcntl.LOCK_EX, blocking=False):
                        break
                    time.sleep(random.uniform(0.002, 0.02))
                    lock.acquire(fcntl.LOCK_SH)
                else:
                    os.utime(path)  # LRU order is mtime order
                    self._count(hits=1, bytes_saved=size)
                    return Pin(path, lock)
                fetched = not self._present(path, size)
                if fetched:
                    self._fill(key, path, size, fill, name or key, verify)
                lock.acquire(fcntl.LOCK_SH)  # not atomic: an evictor may slip in, so re-check
                if self._present(path, size):
                    os.utime(path)
                    self._count(**({"misses": 1, "bytes_fetched": size} if fetched
                                   else {"hits": 1, "bytes_saved": size}))
                    return Pin(path, lock)
            raise CacheFullError(
                f"{name or key} was evicted three times while being fetched: the worker cache "
                f"({_size(self.max_bytes)}) is too small for the jobs running at "
                "once; raise cache_mb (PITWALL_CACHE_MB)")
        except BaseException:
            lock.release()
            raise

    def get(self, key: str, size: int, fill: Fill, *, name: str | None = None,
            verify: Verify | None = None) -> Path:
        """Like :meth:`acquire` but not held in use (eviction may reclaim it later)."""
        pin = self.acquire(key, size, fill, name=name, verify=verify)
        pin.release()
        return pin.path

    @staticmethod
    def _present(path: Path, size: int) -> bool:
        try:
            return path.stat().st_size == size
        except FileNotFoundError:
            return False

    # -- filling (the caller holds the key's lock exclusively) ----------------------------

    def _fill(self, key: str, path: Path, size: int, fill: Fill, name: str,
              verify: Verify | None) -> None:
        path.unlink(missing_ok=True)  # a copy of the wrong size: never serve it
        for stale in self._data.glob(f".part-{key}-*"):
            stale.unlink(missing_ok=True)  # a crashed filler's leftovers; we hold the lock
        self._make_room(size, keep=key)
        problems: list[str] = []
        for attempt in range(2):
            tmp = self._data / f".part-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                problem = self._fill_once(key, tmp, size, fill, verify)
                if problem is None:
                    os.replace(tmp, path)
                    fsync_dir(self._data)
                    return
                problems.append(problem)
            finally:
                tmp.unlink(missing_ok=True)
            if attempt == 0:
                self._count(corrupt_refetches=1)
        self._count(failed_fills=1)
        raise ChecksumMismatchError(
            f"{name} failed verification twice ({'; '.join(problems)}); the copy in the lake "
            "is corrupt, so the job cannot read it. Push or import the dataset again from a "
            "good copy; nothing bad was kept in the cache.")

    def _fill_once(self, key: str, tmp: Path, size: int, fill: Fill,
                   verify: Verify | None) -> str | None:
        """Fill ``tmp`` and verify it; None when good, else what was wrong."""
        try:
            fill(tmp)
        except ChecksumMismatchError as exc:
            return str(exc)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            raise CacheFullError(
                f"the disk under the worker cache {self.root} is full; lower cache_mb "
                f"(now {self.max_bytes // _MIB} MiB) below its free space or free the disk"
            ) from exc
        got = tmp.stat().st_size
        if got != size:
            return f"{got} bytes instead of {size}"
        if verify is not None:
            if (problem := verify(tmp)) is not None:
                return problem
        elif (actual := sha256_file(tmp)) != key:
            return f"sha256 {actual[:16]}… instead of {key[:16]}…"
        tmp.chmod(0o444)  # cached files are never written again, and never by a sandbox
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        return None

    # -- eviction ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[int]:
        fd = os.open(self.root / name, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    def _entries(self) -> list[tuple[float, int, str, Path]]:
        """(mtime, size, key, path) of every cached or in-flight file."""
        out = []
        for path in self._data.iterdir():
            key = path.name.split("-")[1] if path.name.startswith(".part-") else path.name
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            out.append((st.st_mtime, st.st_size, key, path))
        return out

    def _make_room(self, incoming: int, *, keep: str) -> None:
        """Evict least recently used files until ``incoming`` more bytes fit."""
        with self._locked("evict.lock"):
            entries = sorted(self._entries())
            total = sum(e[1] for e in entries)
            for _mtime, size, key, path in entries:
                if total + incoming <= self.max_bytes:
                    return
                if key != keep and self._try_evict(key, path):
                    total -= size
            if total + incoming > self.max_bytes:
                raise CacheFullError(
                    f"the worker cache ({_size(self.max_bytes)} at {self.root}) is full of files "
                    f"in use by running jobs and needs {_size(incoming)} more; raise cache_mb "
                    "(PITWALL_CACHE_MB) or run fewer jobs per worker host")

    def _try_evict(self, key: str, path: Path) -> bool:
        lock = _KeyLock(self._locks / f"{key}.lock")
        if not lock.acquire(fcntl.LOCK_EX, blocking=False):
            return False  # in use or being filled
        try:
            size = path.stat().st_size if path.exists() else 0
            path.unlink(missing_ok=True)
            if not path.name.startswith(".part-"):
                self._count(evictions=1, evicted_bytes=size)
            lock.path.unlink(missing_ok=True)  # waiters notice the new inode and retry
        finally:
            lock.release()
        return True

    def evict_all(self) -> int:
        """Evict every file not in use; return how many were removed (tests, benchmarks)."""
        with self._locked("evict.lock"):
            return sum(self._try_evict(key, path) for _m, _s, key, path in self._entries())

    # -- metrics -------------------------------------------------------------------------

    @contextlib.contextmanager
    def counting_batch(self) -> Iterator[None]:
        """Add up this thread's counter updates and write them once, at the end.

        A job's warm lookups (one per file) then take the counters' lock once rather than
        once each. Nested batches join the outer one.
        """
        if getattr(self._batch, "deltas", None) is not None:
            yield
            return
        self._batch.deltas = {}
        try:
            yield
        finally:
            deltas, self._batch.deltas = self._batch.deltas, None
            if deltas:
                self._counters.add(deltas)

    def _count(self, **deltas: int) -> None:
        pending: dict[str, int] | None = getattr(self._batch, "deltas", None)
        if pending is None:
            self._counters.add(deltas)
            return
        for name, delta in deltas.items():
            pending[name] = pending.get(name, 0) + delta

    def metrics(self) -> dict[str, float]:
        """Counters shared by every process using this cache, plus its current size."""
        out = self._counters.totals()
        lookups = out["hits"] + out["misses"]
        out["hit_ratio"] = out["hits"] / lookups if lookups else 0.0
        cached = [e for e in self._entries() if not e[3].name.startswith(".part-")]
        out["files"] = len(cached)
        out["size_bytes"] = sum(e[1] for e in cached)
        out["max_bytes"] = self.max_bytes
        return out

    def metric_families(self) -> list[Metric]:
        """:meth:`metrics` as Prometheus metric families (``pitwall_cache_*``)."""
        return cache_metrics.families(self.metrics())

    def metrics_text(self) -> str:
        """:meth:`metrics` in the Prometheus text exposition format."""
        return cache_metrics.text(self.metrics())
