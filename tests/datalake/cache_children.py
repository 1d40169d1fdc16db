"""Functions the cache tests run in separate worker processes (spawned: importable here)."""

from __future__ import annotations

from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

from pitwall_executor.datalake.cache import FileCache
from pitwall_executor.datalake.objectstore import sha256_file
from pitwall_executor.datalake.s3 import S3ObjectStore


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
