"""Footer-free reads: the chunk index written at ingest, the synthesized footer, the reader."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from pitwall.errors import DataError
from pitwall_executor.datalake import (
    BARS_SCHEMA,
    Catalog,
    ChunkIndex,
    Snapshot,
    bars_file,
    chunk_index,
    load_bars,
    trading_minutes,
    validate_request,
)
from pitwall_executor.datalake.planner import (
    _scan_sorted,
    _utc_bounds,
    read_indexed,
    scan_bars,
    uses_index,
)
from pitwall_executor.storage.s3 import S3ObjectStore

Lake = tuple[Catalog, Snapshot]
D = dt.date
FIXTURE = Path(__file__).parent / "fixtures" / "lake_format1"
ALL = list(BARS_SCHEMA)


def _scan(catalog: Catalog, snapshot: Snapshot, symbols: Sequence[str], start: D, end: D,
          columns: Sequence[str] = ALL) -> pl.DataFrame:
    """The footer-reading Polars path, as the reference."""
    files = validate_request(snapshot, symbols, start, end)
    lo, hi = _utc_bounds(start, end)
    paths = [catalog.file_path(snapshot.dataset, f) for f in files]
    return _scan_sorted(files, scan_bars(paths, symbols, lo, hi, columns))


def test_the_index_names_every_column_chunk_of_the_written_file(lake: Lake) -> None:
    catalog, snapshot = lake
    for entry in snapshot.files:
        index = entry.index
        assert index is not None and ChunkIndex.decode(index.encode()) == index
        meta = pq.ParquetFile(catalog.file_path("sample", entry)).metadata
        assert index.n_groups == meta.num_row_groups == len(entry.row_group_symbols)
        for g in range(meta.num_row_groups):
            assert index.rows[g] == meta.row_group(g).num_rows
            for c in range(7):
                col = meta.row_group(g).column(c)
                start = col.dictionary_page_offset if col.has_dictionary_page else (
                    col.data_page_offset)
                assert index.chunk(g, c) == (start, start + col.total_compressed_size)
        # statistics only where something prunes on them
        group = meta.row_group(0)
        assert group.column(0).statistics is not None and group.column(1).statistics is not None
        assert all(group.column(c).statistics is None for c in range(2, 7))


@pytest.mark.parametrize("n_groups", [1, 14, 15, 300])
def test_the_fast_footer_is_the_field_by_field_thrift(n_groups: int) -> None:
    groups = [(9000 + g, [(4 + g * 10**6 + c * 70_000, 1000 + 37 * c) for c in range(3)])
              for g in range(n_groups)]
    for cols in ((0, 1, 6), (2, 3, 5)):
        assert chunk_index.footer(groups, cols) == chunk_index.footer_reference(groups, cols)


@pytest.mark.parametrize(("symbols", "start", "end", "columns"), [
    (["AAPL"], D(2024, 2, 1), D(2024, 4, 30), ALL),  # whole files
    (["AAPL"], D(2024, 2, 14), D(2024, 3, 20), ALL),  # cut inside months
    (["XOM", "AAPL", "MSFT"], D(2024, 2, 1), D(2024, 4, 30), ["ts", "symbol", "close"]),
    (["MSFT", "AMZN"], D(2024, 3, 5), D(2024, 3, 5), ["ts", "symbol", "volume", "open"]),
])
def test_indexed_reads_equal_the_footer_scan(lake: Lake, symbols: list[str], start: D, end: D,
                                             columns: list[str]) -> None:
    catalog, snapshot = lake
    wanted = [c for c in ALL if c in {"ts", "symbol", *columns}]
    files = validate_request(snapshot, symbols, start, end)
    assert uses_index(files, symbols, *_utc_bounds(start, end))
    got = load_bars(catalog, snapshot, symbols, start, end, columns=columns)
    expect = _scan(catalog, snapshot, symbols, start, end, wanted)
    assert got.columns == wanted and got.height > 0
    assert got.equals(expect.cast({c: BARS_SCHEMA[c] for c in wanted}))


def test_a_one_day_cross_section_reads_with_the_scan(lake: Lake) -> None:
    catalog, snapshot = lake
    symbols = sorted(snapshot.symbols)
    day = D(2024, 3, 6)
    assert not uses_index(validate_request(snapshot, symbols, day, day), symbols,
                          *_utc_bounds(day, day))
    got = load_bars(catalog, snapshot, symbols, day, day)
    assert got.height == 20 * trading_minutes(day, day) and got["symbol"].n_unique() == 20


def _write(tmp_path: Path, frames: list[pl.DataFrame]) -> tuple[Catalog, Snapshot]:
    catalog = Catalog(tmp_path)
    entry = catalog.write_frames("odd", frames)
    return catalog, catalog.commit("odd", [entry], message="odd groups")


def _bars(symbol: str, n: int, start: dt.datetime, step: dt.timedelta) -> pl.DataFrame:
    ts = pl.datetime_range(start, start + step * (n - 1), step, time_zone="UTC", eager=True)
    return pl.DataFrame({"ts": ts.cast(pl.Datetime("us", "UTC")), "symbol": [symbol] * n,
                         "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5,
                         "volume": pl.int_range(n, eager=True)}, schema=BARS_SCHEMA)


def test_packed_and_spilling_groups_read_right(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # Daily-like symbols packed several to a group, and one big symbol spilling over groups.
    monkeypatch.setattr(bars_file, "MAX_ROW_GROUP_ROWS", 3000)
    t0 = dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC)
    day, minute = dt.timedelta(days=1), dt.timedelta(minutes=1)
    frames = [_bars(f"S{i:02d}", 300, t0, day) for i in range(20)]  # 6000 rows, packed
    frames.append(_bars("ZBIG", 7000, t0, minute))  # spills over three groups
    frames.append(_bars("ZZTOP", 50, t0, day))
    catalog, snapshot = _write(tmp_path, [pl.concat(frames)])
    entry = snapshot.files[0]
    assert entry.row_group_continues and entry.index is not None
    for symbols in (["S03"], ["S03", "S17"], ["ZBIG"], ["ZBIG", "ZZTOP"], ["S19", "ZBIG"]):
        for start, end in ((D(2024, 1, 1), D(2025, 12, 31)), (D(2024, 1, 2), D(2024, 1, 2))):
            got = load_bars(catalog, snapshot, symbols, start, end)
            expect = _scan(catalog, snapshot, symbols, start, end)
            assert got.equals(expect), (symbols, start)
            assert set(got["symbol"]) == set(symbols)


def test_a_snapshot_of_format_1_without_chunk_index_still_loads() -> None:
    catalog = Catalog(FIXTURE)
    raw = json.loads((FIXTURE / "old" / "_versions" / "00000001.json").read_text())
    assert raw["format"] == 1 and all("chunk_index" not in f for f in raw["files"])
    snapshot = catalog.snapshot("old")
    assert all(f.index is None for f in snapshot.files)
    got = load_bars(catalog, snapshot, sorted(snapshot.symbols), D(2024, 1, 29), D(2024, 2, 2))
    assert got.height == snapshot.rows == 5850
    assert got.equals(got.sort("symbol", "ts"))


def test_a_damaged_index_is_refused() -> None:
    with pytest.raises(DataError, match="unknown chunk index"):
        ChunkIndex.decode("zz:AAAA")
    with pytest.raises(DataError, match="corrupt"):
        ChunkIndex.decode("c1:" + "AQID")  # 1 group but too few values
    with pytest.raises(DataError, match="malformed"):
        ChunkIndex(rows=(10,), bounds=(4, 9, 8, 20, 30, 40, 50, 60))


def test_ranged_reads_from_s3_fetch_only_the_chunks_and_check_pages(
        lake: Lake, moto_endpoint: str, bucket: str) -> None:
    catalog, snapshot = lake
    store = S3ObjectStore.from_url(f"s3://{bucket}/lake", endpoint_url=moto_endpoint)
    try:
        for entry in snapshot.files:
            store.put(f"sample/{entry.path}", catalog.file_path("sample", entry))
        start, end = D(2024, 2, 1), D(2024, 4, 30)
        files = validate_request(snapshot, ["AAPL"], start, end)
        got_bytes: list[int] = []

        def fetch_of(key: str, damage: bool = False) -> chunk_index.Fetch:
            def fetch(ranges: Sequence[tuple[int, int]]) -> list[bytes]:
                out = [store.get_range(key, a, b) for a, b in ranges]
                got_bytes.extend(len(b) for b in out)
                if damage:  # one bit flipped inside the first data page's values
                    first = bytearray(out[0])
                    first[len(first) // 2] ^= 0x10
                    out[0] = bytes(first)
                return out
            return fetch

        lo, hi = _utc_bounds(start, end)
        fetches = [fetch_of(f"sample/{f.path}") for f in files]
        got = read_indexed(files, fetches, ["AAPL"], lo, hi, ALL, verify_pages=True)
        assert got.equals(load_bars(catalog, snapshot, ["AAPL"], start, end))
        need = 0
        for f in files:
            index = f.index
            assert index is not None
            for g in f.row_groups_for({"AAPL"}):
                need += index.chunk(g, 6)[1] - index.chunk(g, 0)[0]
        assert sum(got_bytes) <= need  # the group's chunks, no footer
        assert sum(got_bytes) < sum(f.size for f in files) / 5
        damaged = [fetch_of(f"sample/{f.path}", damage=True) for f in files]
        with pytest.raises(OSError, match=r"(?i)crc|checksum"):
            read_indexed(files, damaged, ["AAPL"], lo, hi, ALL, verify_pages=True)
    finally:
        store.close()
