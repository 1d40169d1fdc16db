"""The worker cache's counters, shared by every process that uses the cache.

They are kept in prometheus_client's multiprocess files: each process adds to its own
``<cache root>/metrics/counter_<pid>-<random>.db`` (an mmap, so an increment is a memory
write, no lock or system call), and a reader sums every file there with
``MultiProcessCollector``. So the API's ``/metrics`` shows what each ``pitwall worker``
sharing its data dir has counted.

The directory is given per cache rather than through ``PROMETHEUS_MULTIPROC_DIR``: that
variable fixes one directory for a whole process, and one process may hold caches of
several data dirs (tests, a notebook kernel running jobs itself). A process that exits
normally folds its file into ``counter_archive.db`` (what ``mark_process_dead`` does for
live gauges; counters must keep their counts), so the directory holds about one file per
live process; a killed process's file stays and still counts.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

__all__ = ["COUNTERS", "GAUGES", "SharedCounters", "families", "text"]

PREFIX = "pitwall_cache_"
COUNTERS = {
    "hits": "Lake files or row groups served from the worker cache.",
    "misses": "Lake files or row groups downloaded into the worker cache.",
    "bytes_saved": "Bytes served from the cache instead of the object store.",
    "bytes_fetched": "Bytes downloaded from the object store.",
    "evictions": "Entries (files, row groups) evicted to stay under the bound.",
    "evicted_bytes": "Bytes evicted to stay under the size bound.",
    "corrupt_refetches": "Downloads that failed verification and were fetched again.",
    "failed_fills": "Entries that failed verification twice (the job failed).",
}
GAUGES = {
    "hit_ratio": "hits / (hits + misses) since the cache was created.",
    "files": "Entries (files, row groups) in the cache now.",
    "size_bytes": "Bytes in the cache now.",
    "max_bytes": "The cache's size bound (cache_mb).",
}
_ARCHIVE = "counter_archive.db"


def _key(name: str) -> str:
    """The sample's key in the multiprocess files, as prometheus_client's Counter writes it."""
    metric = PREFIX + name
    return mmap_key(metric, metric + "_total", [], [], COUNTERS[name])


def _process_name() -> str:
    # Not the pid alone: workers in containers sharing the data dir can each be pid 1.
    return f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


class _Files:
    """This process's open counter file per directory (one writer per file, or two
    MmapedDicts of one process would overwrite each other's entries)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[Path, tuple[MmapedDict, Path]] = {}
        self.name = _process_name()
        os.register_at_fork(after_in_child=self._forked)
        atexit.register(self.fold_all)

    def _forked(self) -> None:
        # The parent's files are the parent's: a child writes under its own pid.
        self.lock = threading.Lock()
        for mmaped, _path in self.open.values():
            mmaped.close()
        self.open.clear()
        self.name = _process_name()

    def get(self, directory: Path) -> MmapedDict:
        """The open file of ``directory`` (the caller holds :attr:`lock`)."""
        entry = self.open.get(directory)
        if entry is None:
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"counter_{self.name}.db"
            entry = self.open[directory] = (MmapedDict(str(path)), path)
        return entry[0]

    def fold_all(self) -> None:
        """At exit: move this process's counts into each directory's archive file."""
        with self.lock:
            for directory, (mmaped, path) in self.open.items():
                mmaped.close()
                # A directory removed meanwhile (a test's temp dir) has nothing left to keep.
                with contextlib.suppress(FileNotFoundError):
                    _fold(directory, path)
            self.open.clear()


@contextlib.contextmanager
def _folding(directory: Path, mode: int) -> Iterator[None]:
    """Shared while reading the files, exclusive while one is folded into the archive."""
    fd = os.open(directory / "fold.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)


def _fold(directory: Path, mine: Path) -> None:
    archive = directory / _ARCHIVE
    with _folding(directory, fcntl.LOCK_EX):
        totals: dict[str, float] = {}
        for part in (archive, mine):
            if part.exists():
                for key, value, _ts, _pos in MmapedDict.read_all_values_from_file(str(part)):
                    totals[key] = totals.get(key, 0.0) + value
        tmp = directory / f".archive-{os.getpid()}.tmp"  # not *.db: never read half-written
        merged = MmapedDict(str(tmp))
        for key, value in totals.items():
            merged.write_value(key, value, 0.0)
        merged.close()
        os.replace(tmp, archive)
        mine.unlink(missing_ok=True)


_FILES = _Files()


class SharedCounters:
    """The cache counters of one directory, added to by any number of processes."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def add(self, deltas: Mapping[str, int]) -> None:
        """Add ``deltas`` (counter name → amount) to this process's counts."""
        with _FILES.lock:
            mmaped = _FILES.get(self.directory)
            for name, delta in deltas.items():
                key = _key(name)
                value, _ts = mmaped.read_value(key)
                mmaped.write_value(key, value + delta, 0.0)

    def totals(self) -> dict[str, float]:
        """Every counter summed over all processes, live and gone; 0 for one never counted."""
        out = dict.fromkeys(COUNTERS, 0.0)
        if not self.directory.is_dir():
            return out
        with _folding(self.directory, fcntl.LOCK_SH):
            merged = MultiProcessCollector(None, path=str(self.directory)).collect()
        for metric in merged:
            name = metric.name.removeprefix(PREFIX)
            if name in out and metric.type == "counter":
                out[name] = sum(s.value for s in metric.samples if s.name.endswith("_total"))
        return out


def families(values: Mapping[str, float]) -> list[Metric]:
    """The cache's metric families (counters and gauges) for ``values`` of ``FileCache.metrics``."""
    out: list[Metric] = [CounterMetricFamily(PREFIX + n, h, value=values[n])
                         for n, h in COUNTERS.items()]
    out += [GaugeMetricFamily(PREFIX + n, h, value=values[n]) for n, h in GAUGES.items()]
    return out


class _Snapshot(Collector):
    def __init__(self, values: Mapping[str, float]) -> None:
        self.values = values

    def collect(self) -> Iterator[Metric]:
        yield from families(self.values)


def text(values: Mapping[str, float]) -> str:
    """``values`` in the Prometheus text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(values))
    return generate_latest(registry).decode()
