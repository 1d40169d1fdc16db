"""Row groups of indexed lake files as worker-cache entries, so a cold job fetches only them.

A file with a chunk index holds one row group per symbol (a month file: ~520 of ~35 KB),
and each group is one contiguous byte range, from its first column chunk's start to its
last one's end. A job reading a few symbols from a remote lake needs a few of them, so
rather than download the whole file :class:`~pitwall_executor.datalake.lake_files.LakeFiles`
fetches the needed groups with ranged GETs (one per run of adjacent groups) and caches
each one as its own entry ``<file sha256>.g<group>``, pinned while read like a file.

A group has no hash of its own in the snapshot; its fill is checked by its length and by
decoding it with every Parquet page CRC verified (the bars writer writes them), so a bad
fetch is fetched once more and then refused, and never kept, as for a whole file. The CRCs
cover each page's data, not its header; a damaged header fails the decode instead.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pitwall.errors import DataError
from pitwall_executor.datalake.chunk_index import NAMES, ChunkIndex, Fetch, GroupRead, read_groups

if TYPE_CHECKING:
    from pathlib import Path

    from pitwall_executor.datalake.cache import FileCache
    from pitwall_executor.datalake.snapshot import FileEntry
    from pitwall_executor.storage.objectstore import ObjectStore

__all__ = ["GroupRun", "cold_groups", "file_fetch", "group_key", "group_runs", "group_span",
           "groups_fetch", "prefer_groups", "verify_group"]

# What one more ranged GET costs, in bytes of transfer it could have carried instead (a
# request's first-byte latency, ~20-50 ms on S3, times one connection's ~10 MB/s and up).
# Fetching groups beats the whole file while their bytes plus this per run stay under half
# the file: one symbol of a 18 MiB month (35 KB + 256 KiB) takes groups, ~30 scattered
# symbols still do, a cross-section takes the file (which later requests then share).
REQUEST_BYTES = 256 << 10
MAX_RUN_BYTES = 8 << 20  # one GET at most (the store's part size for whole files)


def group_span(index: ChunkIndex, group: int) -> tuple[int, int]:
    """``[start, end)`` of row group ``group``: all its column chunks, back to back."""
    return index.chunk(group, 0)[0], index.chunk(group, len(NAMES) - 1)[1]


def group_key(sha256: str, group: int) -> str:
    """The cache key of one row group of the file whose content hash is ``sha256``."""
    return f"{sha256}.g{group}"


def group_runs(index: ChunkIndex, groups: Sequence[int],
               max_bytes: int = MAX_RUN_BYTES) -> list[list[int]]:
    """``groups`` (sorted) cut into runs of adjacent groups of at most ``max_bytes`` each
    (a lone group may be bigger): each run is one contiguous byte range, so one GET."""
    runs: list[list[int]] = []
    for g in sorted(groups):
        if (runs and runs[-1][-1] == g - 1
                and group_span(index, g)[1] - group_span(index, runs[-1][0])[0] <= max_bytes):
            runs[-1].append(g)
        else:
            runs.append([g])
    return runs


def prefer_groups(entry: FileEntry, cold: Sequence[int]) -> bool:
    """Whether fetching the ``cold`` groups of ``entry`` beats downloading the whole file.

    Yes when their bytes plus :data:`REQUEST_BYTES` per GET stay under half the file; the
    rest of the file is then not worth its transfer and cache space for this job.
    """
    index = entry.index
    if index is None:
        return False
    cost = sum(group_span(index, g)[1] - group_span(index, g)[0] for g in cold)
    cost += REQUEST_BYTES * len(group_runs(index, cold))
    return 2 * cost < entry.size


class GroupRun:
    """Fills for the cache entries of one run of adjacent groups, from one ranged GET.

    The first fill fetches the bytes from its group to the end of the run; the later
    groups' fills are served from them. A group asked for again (its first copy failed
    verification) or not covered is fetched alone, so a refetch is a fresh read.
    """

    def __init__(self, store: ObjectStore, key: str, index: ChunkIndex,
                 groups: Sequence[int]) -> None:
        self.store = store
        self.key = key
        self.index = index
        self.groups = list(groups)
        self._buffer: bytes | None = None
        self._start = 0
        self._served: set[int] = set()
        self._lock = threading.Lock()

    def fill(self, group: int, dest: Path) -> None:
        """Write group ``group``'s bytes to ``dest`` (a :data:`~.cache.Fill`)."""
        start, end = group_span(self.index, group)
        with self._lock:
            again = group in self._served
            self._served.add(group)
            if self._buffer is None and not again:  # the rest of the run in one request
                last = group_span(self.index, self.groups[-1])[1]
                self._start, self._buffer = start, self.store.get_range(self.key, start, last)
            data = None
            if (not again and self._buffer is not None and self._start <= start
                    and end <= self._start + len(self._buffer)):
                data = self._buffer[start - self._start: end - self._start]
        if data is None:
            data = self.store.get_range(self.key, start, end)
        dest.write_bytes(data)  # the cache checks the length: a short read is refetched


def verify_group(index: ChunkIndex, group: int, path: Path) -> str | None:
    """None if ``path`` holds row group ``group`` intact (every page CRC checked on a full
    decode), else what is wrong; the cache has already checked the length."""
    data = path.read_bytes()
    base = group_span(index, group)[0]

    def fetch(ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        return [data[a - base: b - base] for a, b in ranges]

    try:
        read_groups([GroupRead(index, [group], fetch)], NAMES, verify_pages=True)
    except (OSError, ValueError, DataError) as exc:  # Arrow's errors are OSError/ValueError
        return f"its pages do not decode with their checksums checked ({exc})"
    return None


def file_fetch(path: Path | str) -> Fetch:
    """Ranged reads of a local file (one open, one pread per range)."""
    def fetch(ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        fd = os.open(path, os.O_RDONLY)
        try:
            return [os.pread(fd, end - start, start) for start, end in ranges]
        finally:
            os.close(fd)
    return fetch


def groups_fetch(spans: Sequence[tuple[int, int, Path]]) -> Fetch:
    """Ranged reads of a file from cached entries of some of its groups.

    ``spans`` are ``(start, end, path)``: the entry at ``path`` holds the file's bytes
    ``[start, end)``. A range may cross adjacent entries, and may take along a small hole
    (:data:`~.chunk_index.HOLE_BYTES`) between needed chunks that lies in a group not
    cached; those bytes are never decoded (the reader locates chunks by offset), so they
    read as zeros.
    """
    spans = sorted(spans)
    starts = [s for s, _e, _p in spans]

    def fetch(ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        fds: dict[int, int] = {}

        def read(i: int, lo: int, hi: int) -> bytes:
            if i not in fds:
                fds[i] = os.open(spans[i][2], os.O_RDONLY)
            return os.pread(fds[i], hi - lo, lo - spans[i][0])

        out: list[bytes] = []
        try:
            for a, b in ranges:
                i = bisect.bisect_right(starts, a) - 1
                if i >= 0 and b <= spans[i][1]:  # the usual case: inside one entry
                    out.append(read(i, a, b))
                    continue
                buf = bytearray(b - a)
                for j in range(max(i, 0), len(spans)):
                    s, e, _p = spans[j]
                    if s >= b:
                        break
                    lo, hi = max(a, s), min(b, e)
                    if lo < hi:
                        piece = read(j, lo, hi)
                        buf[lo - a: lo - a + len(piece)] = piece
                out.append(bytes(buf))
        finally:
            for fd in fds.values():
                os.close(fd)
        return out

    return fetch


def cold_groups(cache: FileCache, entry: FileEntry, groups: Sequence[int]) -> list[int]:
    """Those of ``groups`` of ``entry`` not cached now (a hint: no lock taken)."""
    index = entry.index
    assert index is not None
    return [g for g in groups if not cache.contains(
        group_key(entry.sha256, g), group_span(index, g)[1] - group_span(index, g)[0])]
