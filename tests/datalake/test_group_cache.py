"""A cold read of a few symbols from S3 fetches and caches only their row groups.

S3 is moto's server on loopback behind the counting, fault-injecting proxy; the lake is the
session's generated dataset (20 symbols, one file per month, one row group per symbol).
"""

from __future__ import annotations

import datetime as dt
import io
import multiprocessing
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from cache_children import load_one_symbol
from tests.storage.s3_testserver import Fault, FaultProxy

from pitwall.errors import DataError
from pitwall_executor.datalake import Catalog, Snapshot
from pitwall_executor.datalake.cache import FileCache
from pitwall_executor.datalake.group_cache import group_runs, group_span, groups_fetch
from pitwall_executor.datalake.lake_files import LakeFiles, push_dataset
from pitwall_executor.datalake.planner import load_bars, validate_request
from pitwall_executor.datalake.snapshot import FileEntry
from pitwall_executor.storage.s3 import S3ObjectStore

Lake = tuple[Catalog, Snapshot]
START, END = dt.date(2024, 2, 1), dt.date(2024, 4, 30)  # all three months
# Spawned, not forked: a fork of a process whose Polars thread pool is running can hang.
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture
def s3(bucket: str, proxy_url: str, lake: Lake, proxy: FaultProxy) -> Iterator[S3ObjectStore]:
    """The session lake pushed to a fresh bucket, through the proxy (its log then reset)."""
    store = S3ObjectStore.from_url(f"s3://{bucket}/lake", endpoint_url=proxy_url)
    push_dataset(lake[0], "sample", store)
    proxy.reset()
    yield store
    store.close()


@pytest.fixture
def files(tmp_path: Path, s3: S3ObjectStore) -> Iterator[LakeFiles]:
    lake = LakeFiles(s3, FileCache(tmp_path / "cache", 256 << 20))
    yield lake
    lake.release()


def group_bytes(snapshot: Snapshot, symbols: list[str]) -> int:
    """Bytes of the row groups holding ``symbols`` in the files of the whole range."""
    total = 0
    for f in validate_request(snapshot, symbols, START, END):
        assert f.index is not None
        total += sum(group_span(f.index, g)[1] - group_span(f.index, g)[0]
                     for g in f.row_groups_for(set(symbols)))
    return total


def ranged_bytes(proxy: FaultProxy) -> int:
    """Bytes the GETs through the proxy asked for (every data GET carries a Range)."""
    total = 0
    for r in proxy.gets("/sample/data/"):
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", r.range or "")
        assert match is not None, r
        total += int(match[2]) - int(match[1]) + 1
    return total


def entry_names(cache: FileCache) -> list[str]:
    return sorted(p.name for p in (cache.root / "data").iterdir())


def test_a_cold_read_fetches_only_the_row_groups_and_a_warm_one_makes_no_request(
        lake: Lake, files: LakeFiles, proxy: FaultProxy) -> None:
    catalog, snap = lake
    assert files.cache is not None
    expected = load_bars(catalog, snap, ["AAPL"], START, END)
    got = load_bars(catalog, snap, ["AAPL"], START, END, lake=files)
    assert got.equals(expected)
    need = group_bytes(snap, ["AAPL"])
    total = sum(f.size for f in validate_request(snap, ["AAPL"], START, END))
    assert len(proxy.gets("/sample/data/")) == 3  # one GET per month file
    assert ranged_bytes(proxy) == need <= total / 10  # exactly the groups, no footer
    metrics = files.cache.metrics()
    assert (metrics["misses"], metrics["bytes_fetched"], metrics["hits"]) == (3, need, 0)
    assert all(re.fullmatch(r"[0-9a-f]{64}\.g0", n) for n in entry_names(files.cache))
    assert len(entry_names(files.cache)) == 3 and metrics["size_bytes"] == need
    files.release()
    proxy.reset()
    again = load_bars(catalog, snap, ["AAPL"], START, END, lake=files)
    assert again.equals(expected)
    assert proxy.seen == []  # warm: not a single request
    metrics = files.cache.metrics()
    assert (metrics["hits"], metrics["bytes_saved"], metrics["misses"]) == (3, need, 3)


def test_adjacent_groups_come_in_one_request_and_read_across_entries(
        lake: Lake, files: LakeFiles, proxy: FaultProxy) -> None:
    catalog, snap = lake
    symbols = ["AAPL", "ABBV"]  # groups 0 and 1 of each file: one byte range
    got = load_bars(catalog, snap, symbols, START, END, lake=files,
                    columns=["close", "volume"])
    assert got.equals(load_bars(catalog, snap, symbols, START, END, columns=["close", "volume"]))
    assert len(proxy.gets("/sample/data/")) == 3
    assert ranged_bytes(proxy) == group_bytes(snap, symbols)
    assert files.cache is not None and files.cache.metrics()["misses"] == 6


def test_most_of_a_file_is_fetched_whole_and_then_serves_single_symbols(
        lake: Lake, files: LakeFiles, proxy: FaultProxy) -> None:
    catalog, snap = lake
    everyone = sorted(snap.symbols)
    got = load_bars(catalog, snap, everyone, START, END, lake=files)
    assert got.equals(load_bars(catalog, snap, everyone, START, END))
    assert files.cache is not None
    shas = {f.sha256 for f in snap.files}
    assert set(entry_names(files.cache)) == shas  # whole files, no group entries
    assert files.cache.metrics()["bytes_fetched"] == sum(f.size for f in snap.files)
    files.release()
    proxy.reset()
    one = load_bars(catalog, snap, ["MSFT"], START, END, lake=files)
    assert one.equals(load_bars(catalog, snap, ["MSFT"], START, END))
    assert proxy.seen == [] and set(entry_names(files.cache)) == shas


def test_a_group_damaged_in_transit_is_fetched_again(
        lake: Lake, files: LakeFiles, proxy: FaultProxy) -> None:
    catalog, snap = lake
    proxy.inject(Fault(1, method="GET", corrupt=True))
    got = load_bars(catalog, snap, ["KO"], START, END, lake=files)
    assert got.equals(load_bars(catalog, snap, ["KO"], START, END))
    assert len(proxy.gets("/sample/data/")) == 4  # three groups, one of them twice
    assert files.cache is not None
    metrics = files.cache.metrics()
    assert (metrics["corrupt_refetches"], metrics["failed_fills"], metrics["misses"]) == (1, 0, 3)


def test_a_corrupt_group_in_the_lake_fails_the_job_and_is_never_kept(
        lake: Lake, files: LakeFiles, proxy: FaultProxy, raw_s3: Any, bucket: str) -> None:
    catalog, snap = lake
    entry = validate_request(snap, ["JPM"], START, END)[1]
    index = entry.index
    assert index is not None
    group = entry.row_groups_for({"JPM"})[0]
    a, b = index.chunk(group, 5)  # inside the close column's pages
    data = bytearray(catalog.file_path("sample", entry).read_bytes())
    data[(a + b) // 2] ^= 0x10
    raw_s3.put_object(Bucket=bucket, Key=f"lake/sample/{entry.path}", Body=bytes(data))
    with pytest.raises(DataError, match=rf"sample/{re.escape(entry.path)} \(row group "
                                        rf"{group}\) failed verification twice.*checksum"):
        load_bars(catalog, snap, ["JPM"], START, END, lake=files)
    assert len(proxy.gets(entry.path)) == 2  # fetched once more, then refused
    assert files.cache is not None
    names = entry_names(files.cache)
    assert not any(n.startswith(entry.sha256) or n.startswith(".part-") for n in names)
    metrics = files.cache.metrics()
    assert (metrics["corrupt_refetches"], metrics["failed_fills"]) == (1, 1)


def test_two_processes_reading_the_same_groups_download_them_once(
        tmp_path: Path, lake: Lake, s3: S3ObjectStore, proxy: FaultProxy,
        proxy_url: str) -> None:
    """Three rounds, each on an empty cache: the race that once deadlocked two readers
    (each pinning the group the other waited to fill, 1 run in ~7) must not come back."""
    catalog, snap = lake
    expected = load_bars(catalog, snap, ["PG"], START, END)
    proxy.delay_get_s = 0.5  # the first download outlasts the other process's arrival
    for round_ in range(3):
        cache = tmp_path / f"cache-{round_}"
        gets_before = len(proxy.gets("/sample/data/"))
        barrier, out = SPAWN.Barrier(2), SPAWN.Queue()
        procs = [SPAWN.Process(target=load_one_symbol,
                              args=(cache, s3.url, proxy_url, snap, "PG", START, END,
                                    barrier, out)) for _ in range(2)]
        for p in procs:
            p.start()
        try:
            answers = [out.get(timeout=60) for _ in procs]
        finally:
            for p in procs:
                p.join(30)
                if p.is_alive():
                    p.kill()  # a hung reader must not outlive the test
        failed = [a.decode() for a in answers if a.startswith(b"Traceback")]
        assert not failed, failed[0]
        assert [p.exitcode for p in procs] == [0, 0]
        frames = [pl.read_ipc(io.BytesIO(a)) for a in answers]
        assert all(f.equals(expected) for f in frames)
        # Each group once, for both processes.
        assert len(proxy.gets("/sample/data/")) - gets_before == 3
        metrics = FileCache(cache, 256 << 20).metrics()
        assert (metrics["misses"], metrics["hits"]) == (3, 3)
        assert metrics["bytes_fetched"] == metrics["bytes_saved"] == group_bytes(snap, ["PG"])


def test_ranges_across_entries_and_holes_between_them(tmp_path: Path) -> None:
    one, two = tmp_path / "g1", tmp_path / "g3"
    one.write_bytes(bytes(range(100, 110)))  # the file's bytes [100, 110)
    two.write_bytes(bytes(range(120, 130)))  # [120, 130); [110, 120) is not cached
    fetch = groups_fetch([(120, 130, two), (100, 110, one)])
    got = fetch([(102, 105), (108, 123), (125, 130)])
    assert got == [bytes([102, 103, 104]), bytes([108, 109]) + bytes(10) + bytes([120, 121, 122]),
                   bytes(range(125, 130))]


def test_runs_of_adjacent_groups_are_capped(lake: Lake) -> None:
    entry: FileEntry = lake[1].files[0]
    index = entry.index
    assert index is not None
    assert group_runs(index, [5, 0, 1, 2, 7, 8]) == [[0, 1, 2], [5], [7, 8]]
    one = group_span(index, 1)[1] - group_span(index, 0)[0]
    assert group_runs(index, [0, 1, 2], max_bytes=one) == [[0, 1], [2]]


def test_a_row_group_entry_needs_a_verifier(tmp_path: Path) -> None:
    cache = FileCache(tmp_path / "cache", 1 << 20)
    with pytest.raises(ValueError, match="no sha256 to check: pass verify"):
        cache.get("ab" * 32 + ".g3", 4, lambda tmp: tmp.write_bytes(b"abcd"))
    path = cache.get("ab" * 32 + ".g3", 4, lambda tmp: tmp.write_bytes(b"abcd"),
                     verify=lambda tmp: None)
    assert path.name == "ab" * 32 + ".g3" and path.read_bytes() == b"abcd"
    with pytest.raises(DataError, match=r"\.g4 failed verification twice \(bad; bad\)"):
        cache.get("ab" * 32 + ".g4", 4, lambda tmp: tmp.write_bytes(b"abcd"),
                  verify=lambda tmp: "bad")
    assert entry_names(cache) == ["ab" * 32 + ".g3"]
