"""Functions the cache tests run in separate worker processes (spawned: importable here)."""

from __future__ import annotations

import datetime as dt
import io
import traceback
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from pitwall_executor.datalake.cache import FileCache
from pitwall_executor.datalake.catalog import Catalog
from pitwall_executor.datalake.lake_files import LakeFiles
from pitwall_executor.datalake.planner import load_bars
from pitwall_executor.datalake.snapshot import Snapshot
from pitwall_executor.storage.objectstore import sha256_file
from pitwall_executor.storage.s3 import S3ObjectStore


def fetch(cache_root: Path, url: str, endpoint: str, key: str, sha: str, size: int,
          barrier: Barrier | None, out: Queue[tuple[str, str]]) -> None:
    """Acquire one S3 object through the cache, as a worker process would."""
    store = S3ObjectStore.from_url(url, endpoint_url=endpoint)
    cache = FileCache(cache_root, 64 << 20)
    if barrier is not None:
        barrier.wait(300)  # all processes ask at the same moment
    try:
        path = cache.get(sha, size, lambda tmp: store.get_to_file(key, tmp, size=size))
        out.put((str(path), sha256_file(path)))
    finally:
        store.close()


def load_one_symbol(cache_root: Path, url: str, endpoint: str, snapshot: Snapshot, symbol: str,
                    start: dt.date, end: dt.date, barrier: Barrier,
                    out: Queue[bytes]) -> None:
    """Read one symbol through a worker's LakeFiles (row groups from S3); put the frame."""
    lake = LakeFiles(S3ObjectStore.from_url(url, endpoint_url=endpoint),
                     FileCache(cache_root, 256 << 20))
    barrier.wait(300)
    try:
        frame = load_bars(Catalog(cache_root / "unused"), snapshot, [symbol], start, end,
                          lake=lake)
        sink = io.BytesIO()
        frame.write_ipc(sink)
        out.put(sink.getvalue())
    except BaseException:
        out.put(traceback.format_exc().encode())  # the parent reports it, not a timeout
        raise
    finally:
        lake.close()
