from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from pitwall.errors import DataError, EmptyRangeError, UnknownDatasetError
from pitwall_executor.datalake import (
    Catalog,
    CommitConflictError,
    Snapshot,
    generate_bars,
    generate_dataset,
    trading_minutes,
)

JAN = (dt.date(2024, 1, 2), dt.date(2024, 1, 5))


def month(symbols: list[str], seed: int = 1) -> pl.DataFrame:
    return next(generate_bars(symbols, *JAN, seed=seed))


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_write_file_is_content_addressed_and_described(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    frame = month(["MSFT", "AAPL"])
    entry = catalog.write_file("sample", frame)
    path = catalog.file_path("sample", entry)
    assert path == tmp_path / "sample" / "data" / f"{entry.sha256}.parquet"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    assert entry.size == path.stat().st_size
    assert entry.rows == frame.height == 2 * trading_minutes(*JAN)
    assert entry.symbols == ("AAPL", "MSFT")
    assert entry.days == tuple(dt.date(2024, 1, d) for d in (2, 3, 4, 5))
    assert entry.min_ts == dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC)
    assert entry.max_ts == dt.datetime(2024, 1, 5, 20, 59, tzinfo=dt.UTC)
    assert pl.read_parquet(path).equals(frame)


def test_same_bars_give_the_same_bytes(tmp_path: Path) -> None:
    first = Catalog(tmp_path / "a").write_file("sample", month(["AAPL"], seed=4))
    second = Catalog(tmp_path / "b").write_file("sample", month(["AAPL"], seed=4))
    other = Catalog(tmp_path / "c").write_file("sample", month(["AAPL"], seed=5))
    assert first.sha256 == second.sha256
    assert other.sha256 != first.sha256


def test_row_groups_hold_one_symbol_each(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    frame = next(
        generate_bars(["AAPL", "MSFT", "XOM"], dt.date(2024, 1, 1), dt.date(2024, 1, 31), seed=1)
    )
    meta = pq.ParquetFile(catalog.file_path("sample", catalog.write_file("sample", frame))).metadata
    symbol_col = meta.schema.names.index("symbol")
    ranges = [meta.row_group(i).column(symbol_col).statistics for i in range(meta.num_row_groups)]
    assert [(s.min, s.max) for s in ranges] == [("AAPL", "AAPL"), ("MSFT", "MSFT"), ("XOM", "XOM")]
    assert meta.row_group(0).column(0).compression == "ZSTD"


def test_commits_make_versions_and_old_versions_stay_readable(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    v1_frame = month(["AAPL"])
    v1 = catalog.commit("sample", [catalog.write_file("sample", v1_frame)], message="first")
    v2_file = catalog.write_file("sample", month(["AAPL", "MSFT"], seed=2))
    v2 = catalog.commit("sample", [v2_file], message="second", properties={"note": "x"})
    assert (v1.version, v1.parent, v2.version, v2.parent) == (1, None, 2, 1)
    infos = catalog.versions("sample")
    assert [(i.version, i.message, i.n_files) for i in infos] == [(1, "first", 1), (2, "second", 1)]
    assert catalog.snapshot("sample") == v2
    assert catalog.snapshot("sample").properties == {"note": "x"}
    old = catalog.snapshot("sample", 1)
    assert old == v1
    assert old.symbols == frozenset({"AAPL"})
    assert pl.read_parquet(catalog.file_path("sample", old.files[0])).equals(v1_frame)
    assert catalog.datasets() == ["sample"]
    snapshot_file = tmp_path / "sample" / "_versions" / "00000002.json"
    assert json.loads(snapshot_file.read_text())["files"][0]["sha256"] == v2_file.sha256


def test_snapshot_summary_properties() -> None:
    catalog_less = Snapshot(dataset="d", version=3, files=())
    assert catalog_less.label == "d@v3"
    assert catalog_less.first_ts is None
    assert catalog_less.symbols == frozenset()


def test_no_temp_files_are_left_even_after_a_refused_write(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    frame = month(["AAPL", "MSFT"])
    catalog.commit("sample", [catalog.write_file("sample", frame)], message="ok")
    with pytest.raises(DataError, match="sorted"):
        catalog.write_file("sample", frame.reverse())
    with pytest.raises(DataError, match="schema"):
        catalog.write_file("sample", frame.with_columns(pl.col("volume").cast(pl.Float64)))
    files = tree(tmp_path)
    assert not [f for f in files if ".tmp-" in f]
    assert len(files) == 2  # one data file, one snapshot


def test_concurrent_commits_never_share_a_version(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    entry = catalog.write_file("sample", month(["AAPL"]))
    outcomes: list[int | str] = []
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            outcomes.append(catalog.commit("sample", [entry], message=f"w{i}").version)
        except CommitConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = sorted(v for v in outcomes if isinstance(v, int))
    assert len(outcomes) == 8
    assert won == list(range(1, len(won) + 1))  # each version committed exactly once
    assert [i.version for i in catalog.versions("sample")] == won
    messages = {i.message for i in catalog.versions("sample")}
    assert len(messages) == len(won)


def test_commit_refuses_files_that_are_not_there(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    entry = catalog.write_file("sample", month(["AAPL"]))
    catalog.file_path("sample", entry).unlink()
    with pytest.raises(DataError, match="missing"):
        catalog.commit("sample", [entry], message="broken")
    assert catalog.datasets() == []


def test_unknown_dataset_suggests_the_closest_name(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    with pytest.raises(UnknownDatasetError, match="No dataset exists yet"):
        catalog.snapshot("sample")
    catalog.commit("sample", [catalog.write_file("sample", month(["AAPL"]))], message="m")
    with pytest.raises(UnknownDatasetError) as info:
        catalog.snapshot("sampel")
    assert str(info.value) == (
        "dataset 'sampel' does not exist; did you mean 'sample'? Datasets: sample. "
        "Create one with `pitwall data generate`."
    )
    with pytest.raises(UnknownDatasetError, match=r"has no version 4; its versions are 1\."):
        catalog.snapshot("sample", 4)
    with pytest.raises(UnknownDatasetError, match="not valid"):
        catalog.snapshot("../etc")


def test_generate_dataset_is_idempotent(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)

    def generate(seed: int) -> Snapshot:
        return generate_dataset(
            catalog,
            "sample",
            symbols=["MSFT", "AAPL"],
            start=dt.date(2024, 1, 25),
            end=dt.date(2024, 2, 6),
            seed=seed,
        )

    first = generate(1)
    files_before = tree(tmp_path)
    assert generate(1) == first
    assert tree(tmp_path) == files_before
    assert len(first.files) == 2  # January and February
    assert first.properties["generator"]["seed"] == 1

    other, back = generate(2), generate(1)
    assert (other.version, back.version) == (2, 3)
    assert {f.sha256 for f in other.files}.isdisjoint(f.sha256 for f in first.files)
    assert back.files == first.files  # same bytes, same content-addressed files, reused


def test_generating_a_range_without_trading_days_is_refused(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    with pytest.raises(EmptyRangeError, match="no trading day between 2024-03-09 and 2024-03-10"):
        generate_dataset(
            catalog,
            "sample",
            symbols=["AAPL"],
            start=dt.date(2024, 3, 9),
            end=dt.date(2024, 3, 10),
            seed=1,
        )
    assert catalog.datasets() == []
