"""The worker file cache: one download across processes, atomic fills, verification, LRU
eviction within its bound, clear errors, metrics. S3 is moto's server on loopback behind a
counting, fault-injecting proxy (real sockets, no mock objects)."""

from __future__ import annotations

import datetime as dt
import hashlib
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cache_children import fetch
from prometheus_client.parser import text_string_to_metric_families
from tests.storage.s3_testserver import Fault, FaultProxy

from pitwall.errors import DataError
from pitwall_executor.datalake.cache import CacheFullError, FileCache
from pitwall_executor.storage.s3 import S3ObjectStore

_T0 = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
# Forked: quick to start; each child opens its own S3 client and cache descriptors.
FORK = multiprocessing.get_context("fork")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def writer(data: bytes) -> Any:
    """A fill that writes ``data`` (a local source, for the eviction tests)."""
    return lambda tmp: tmp.write_bytes(data)


@pytest.fixture
def s3(bucket: str, proxy_url: str) -> Iterator[S3ObjectStore]:
    store = S3ObjectStore.from_url(f"s3://{bucket}/lake", endpoint_url=proxy_url)
    yield store
    store.close()


def put_blob(s3: S3ObjectStore, proxy: FaultProxy, name: str, size: int) -> tuple[str, bytes]:
    data = os.urandom(size)
    s3.put(name, data)
    proxy.reset()
    return sha(data), data


def cached_names(cache: FileCache) -> list[str]:
    return sorted(p.name for p in (cache.root / "data").iterdir())


def test_processes_asking_at_once_download_once(tmp_path: Path, s3: S3ObjectStore,
                                                proxy: FaultProxy, proxy_url: str) -> None:
    key, _data = put_blob(s3, proxy, "ds/data/f.parquet", 2_000_000)
    proxy.delay_get_s = 0.5  # the download outlasts the others' arrival
    barrier, out = FORK.Barrier(4), FORK.Queue()
    procs = [FORK.Process(target=fetch, args=(tmp_path / "cache", s3.url, proxy_url,
                                               "ds/data/f.parquet", key, 2_000_000, barrier, out))
             for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in procs]  # spawn is slow on a busy host
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert len(proxy.gets("f.parquet")) == 1
    assert {r for r in results} == {(str(tmp_path / "cache" / "data" / key), key)}
    metrics = FileCache(tmp_path / "cache", 64 << 20).metrics()
    assert (metrics["misses"], metrics["hits"], metrics["hit_ratio"]) == (1, 3, 0.75)
    assert metrics["bytes_saved"] == 3 * 2_000_000


def test_a_crash_mid_download_never_leaves_a_served_file(tmp_path: Path, s3: S3ObjectStore,
                                                         proxy: FaultProxy,
                                                         proxy_url: str) -> None:
    key, data = put_blob(s3, proxy, "ds/data/g.parquet", 3_000_000)
    proxy.inject(Fault(1, method="GET", stall=True))  # half the body, then silence
    cache = FileCache(tmp_path / "cache", 64 << 20)
    out = FORK.Queue()
    child = FORK.Process(target=fetch, args=(cache.root, s3.url, proxy_url,
                                              "ds/data/g.parquet", key, len(data), None, out))
    child.start()
    deadline = time.monotonic() + 300
    while not any(p.stat().st_size > 0 for p in (cache.root / "data").glob(".part-*")):
        assert time.monotonic() < deadline, "the child never started writing"
        time.sleep(0.05)
    assert child.pid is not None
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    proxy.release.set()
    assert not cache.contains(key, len(data)) and not cache.path_for(key).exists()
    assert len(cached_names(cache)) == 1 and cached_names(cache)[0].startswith(".part-")
    path = cache.get(key, len(data), lambda tmp: s3.get_to_file("ds/data/g.parquet", tmp))
    assert path.read_bytes() == data
    assert cached_names(cache) == [key]  # the crashed download's leftovers are gone
    assert len(proxy.gets("g.parquet")) == 2


def test_eviction_is_least_recently_used_and_bounded(tmp_path: Path) -> None:
    cache = FileCache(tmp_path / "cache", 3000)
    blobs = {name: os.urandom(1000) for name in "abcd"}
    keys = {name: sha(b) for name, b in blobs.items()}
    for name in "abc":
        cache.get(keys[name], 1000, writer(blobs[name]))
        time.sleep(0.01)
    cache.get(keys["a"], 1000, writer(b"never called"))  # a hit: a is now the freshest
    time.sleep(0.01)
    cache.get(keys["d"], 1000, writer(blobs["d"]))
    assert cached_names(cache) == sorted(keys[n] for n in "acd")
    metrics = cache.metrics()
    assert metrics["size_bytes"] <= 3000 and metrics["evictions"] == 1
    assert (metrics["hits"], metrics["misses"]) == (1, 4)
    for n in "acd":
        assert (cache.root / "data" / keys[n]).stat().st_mode & 0o777 == 0o444


def test_files_in_use_are_never_evicted(tmp_path: Path) -> None:
    cache = FileCache(tmp_path / "cache", 3000)
    blobs = [os.urandom(1000) for _ in range(4)]
    pins = [cache.acquire(sha(b), 1000, writer(b)) for b in blobs[:3]]
    with pytest.raises(CacheFullError, match=r"in use.*raise cache_mb"):
        cache.get(sha(blobs[3]), 1000, writer(blobs[3]))
    pins[1].release()
    cache.get(sha(blobs[3]), 1000, writer(blobs[3]))
    assert not cache.contains(sha(blobs[1]), 1000)
    assert all(cache.contains(sha(b), 1000) for b in (blobs[0], blobs[2], blobs[3]))


def test_a_job_larger_than_the_cache_fails_before_downloading(tmp_path: Path,
                                                              s3: S3ObjectStore,
                                                              proxy: FaultProxy) -> None:
    from pitwall_executor.datalake.lake_files import LakeFiles
    from pitwall_executor.datalake.snapshot import FileEntry

    entries = []
    for i in range(3):
        key, _ = put_blob(s3, proxy, f"ds/data/{i}.parquet", 700_000)
        entries.append(FileEntry(path=f"data/{i}.parquet", sha256=key, size=700_000, rows=1,
                                 min_ts=_T0, max_ts=_T0, symbols=("A",), days=(_T0.date(),)))
    lake = LakeFiles(s3, FileCache(tmp_path / "cache", 1 << 20))
    with pytest.raises(DataError, match=r"2\.0 MiB of files .* at most 1\.0 MiB; raise cache_mb"):
        lake.local_paths("ds", entries)
    assert proxy.gets("ds/data") == []


def test_a_corrupt_download_is_fetched_again_once(tmp_path: Path, s3: S3ObjectStore,
                                                  proxy: FaultProxy) -> None:
    key, data = put_blob(s3, proxy, "ds/data/h.parquet", 500_000)
    proxy.inject(Fault(1, method="GET", corrupt=True))
    cache = FileCache(tmp_path / "cache", 64 << 20)
    path = cache.get(key, len(data), lambda tmp: s3.get_to_file("ds/data/h.parquet", tmp))
    assert path.read_bytes() == data
    assert len(proxy.gets("h.parquet")) == 2
    assert cache.metrics()["corrupt_refetches"] == 1


def test_a_corrupt_object_fails_the_job_and_is_never_kept(tmp_path: Path, s3: S3ObjectStore,
                                                          proxy: FaultProxy, raw_s3: Any,
                                                          bucket: str) -> None:
    key, data = put_blob(s3, proxy, "ds/data/i.parquet", 500_000)
    bad = bytearray(data)
    bad[1234] ^= 0x55
    raw_s3.put_object(Bucket=bucket, Key="lake/ds/data/i.parquet", Body=bytes(bad))
    cache = FileCache(tmp_path / "cache", 64 << 20)
    with pytest.raises(DataError, match=r"ds/data/i\.parquet failed verification twice"):
        cache.get(key, len(data), lambda tmp: s3.get_to_file("ds/data/i.parquet", tmp),
                  name=f"{s3.url}/ds/data/i.parquet")
    assert len(proxy.gets("i.parquet")) == 2
    assert cached_names(cache) == []
    metrics = cache.metrics()
    assert (metrics["corrupt_refetches"], metrics["failed_fills"]) == (1, 1)


def test_a_damaged_cached_copy_is_replaced(tmp_path: Path) -> None:
    cache = FileCache(tmp_path / "cache", 1 << 20)
    data = os.urandom(5000)
    cache.path_for(sha(data)).write_bytes(data[:100])  # e.g. a truncated copy
    assert cache.get(sha(data), 5000, writer(data)).read_bytes() == data


def test_metrics_in_prometheus_text(tmp_path: Path) -> None:
    cache = FileCache(tmp_path / "cache", 1 << 20)
    data = os.urandom(4000)
    for _ in range(3):
        cache.get(sha(data), 4000, writer(data))
    families = {f.name: f for f in text_string_to_metric_families(cache.metrics_text())}
    assert families["pitwall_cache_hits"].type == "counter"
    assert families["pitwall_cache_hit_ratio"].type == "gauge"
    values = {s.name: s.value for f in families.values() for s in f.samples}
    assert values == {
        "pitwall_cache_hits_total": 2, "pitwall_cache_misses_total": 1,
        "pitwall_cache_bytes_saved_total": 8000, "pitwall_cache_bytes_fetched_total": 4000,
        "pitwall_cache_evictions_total": 0, "pitwall_cache_evicted_bytes_total": 0,
        "pitwall_cache_corrupt_refetches_total": 0, "pitwall_cache_failed_fills_total": 0,
        "pitwall_cache_hit_ratio": 2 / 3, "pitwall_cache_files": 1,
        "pitwall_cache_size_bytes": 4000, "pitwall_cache_max_bytes": 1 << 20}



def test_load_bars_from_s3_equals_the_local_read(tmp_path: Path, lake: tuple[Any, Any],
                                                  s3: S3ObjectStore, proxy: FaultProxy) -> None:
    from pitwall_executor.datalake.lake_files import LakeFiles, push_dataset
    from pitwall_executor.datalake.planner import load_bars

    catalog, snap = lake
    report = push_dataset(catalog, "sample", s3)
    assert report.uploaded == len(snap.files) + 1 and report.skipped == 0
    files = LakeFiles(s3, FileCache(tmp_path / "cache", 256 << 20))
    remote = files.catalog(tmp_path / "mirror")
    assert remote.datasets() == ["sample"] and remote.snapshot("sample") == snap
    symbols, start, end = ["AAPL", "MSFT"], dt.date(2024, 3, 5), dt.date(2024, 4, 9)
    expected = load_bars(catalog, snap, symbols, start, end)
    proxy.reset()
    got = load_bars(remote, remote.snapshot("sample", 1), symbols, start, end, lake=files)
    assert got.equals(expected)
    # Two files, each read as its AAPL and MSFT row groups (not adjacent: two ranged GETs).
    assert len(proxy.gets("/sample/data/")) == 4 and proxy.gets("_versions") == []
    files.release()
    again = load_bars(remote, remote.snapshot("sample", 1), symbols, start, end, lake=files)
    assert again.equals(expected) and len(proxy.gets("/sample/data/")) == 4
    assert files.cache is not None and files.cache.metrics()["hits"] == 4
    with pytest.raises(DataError, match="read-only here"):
        remote.commit("sample", [], message="x")


def test_a_push_sends_reference_files_before_the_version_that_names_them(
        tmp_path: Path, s3: S3ObjectStore, proxy: FaultProxy) -> None:
    from pitwall_executor.datalake import Catalog, generate_dataset
    from pitwall_executor.datalake.lake_files import push_dataset

    catalog = Catalog(tmp_path / "lake")
    generate_dataset(catalog, "ref", symbols=["AAPL", "MSFT"], start=dt.date(2024, 1, 1),
                     end=dt.date(2024, 1, 31), seed=3, corporate_events=True)
    proxy.reset()
    push_dataset(catalog, "ref", s3)
    puts = [r.path for r in proxy.seen if r.method == "PUT"]
    order = [("_versions/" in p, "/reference/" in p, "/data/" in p) for p in puts]
    versions = [i for i, (v, _, _) in enumerate(order) if v]
    others = [i for i, (v, r, d) in enumerate(order) if r or d]
    assert versions and any(r for _, r, _ in order), puts  # both kinds were sent
    # A mirror syncing mid-push never lists a version whose files are not there yet.
    assert max(others) < min(versions), puts
