"""Which file layout serves both access patterns: the benchmark behind decision 0002.

Three layouts of the same generated bars (see ``bench/layout_data.py``), two patterns:

- (a) few symbols, the whole span (1 symbol all columns; 5 symbols, close+volume);
- (b) the whole cross-section (520 symbols), one day and one month, all columns.

For each layout and query: the read time (``ym_sorted``: Pitwall's ``load_bars``, which
reads exactly the symbols' column chunks via the snapshot's chunk index, no footer; the
others: a Polars ``scan_parquet`` with predicate + projection pushdown), rows/s, and what a
remote reader fetches: bytes, files and ranged requests. For ``ym_sorted`` they are counted
along the path ``load_bars`` takes: the ranged reader (``planner.read_indexed``), or for a
one-day cross-section a footer-reading scan; the row under it counts the other path. For
the other layouts, by reading the same row groups and columns through a counting file
wrapper with ``pyarrow.parquet``. "read/ideal" = bytes
fetched / compressed bytes of exactly the requested rows and columns.

DuckDB reads the same files side by side, and before any time is printed the bench
asserts that every reader returned the same rows with the same values (both sorted by
``(symbol, ts)``, compared exactly). Metadata caches are compared like for like:

- ``pw idx`` = ``load_bars`` with the snapshot open and its chunk index decoded (cached
  in the process, as a worker holds them), against ``duck on`` = DuckDB with
  ``SET parquet_metadata_cache = true`` (its Parquet footer cache, warmed by the
  first run; the setting of the installed DuckDB, see ``duckdb_settings()``);
- ``pw cold`` = ``load_bars`` after re-reading the snapshot JSON and clearing the decoded
  index cache on every call, against ``duck off`` = DuckDB with the cache off (its
  default: every query reads the footers). The other layouts are Polars scans, which
  read the footers on every call: they compare with ``duck off``.

The OS page cache is warm for every reader (one untimed run first).

    .venv/bin/python bench/data_layout.py                 # 100M rows (written once, ~6 min)
    .venv/bin/python bench/data_layout.py --rows 5000000  # a quick run
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.parquet as pq
from polars.testing import assert_frame_equal

from layout_data import bucket_of, ensure
from pitwall_executor.datalake import Catalog
from pitwall_executor.datalake.chunk_index import NAMES
from pitwall_executor.datalake.market_calendar import trading_days
from pitwall_executor.datalake.planner import load_bars, plan, read_indexed, uses_index
from pitwall_executor.datalake.snapshot import FileEntry, _decode_index

ALL = ["open", "high", "low", "close", "volume"]


@dataclass(frozen=True)
class Query:
    name: str
    symbols: list[str]
    start: dt.date
    end: dt.date
    columns: list[str]


class CountingFile(io.RawIOBase):
    """A read-only file that counts the bytes and the read calls (ranged GETs) it serves."""

    def __init__(self, path: Path, tally: dict[str, int]) -> None:
        self._fh = path.open("rb")
        self._tally = tally
        tally["files"] += 1

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self._tally["bytes"] += len(data)
        self._tally["requests"] += 1
        return data

    def close(self) -> None:
        self._fh.close()
        super().close()


def _groups(meta: pq.FileMetaData, symbols: set[str], lo: dt.datetime, hi: dt.datetime
            ) -> list[int]:
    """Row groups whose symbol and ts statistics overlap the request."""
    names = meta.schema.names
    si, ti = names.index("symbol"), names.index("ts")
    keep = []
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        s, t = rg.column(si).statistics, rg.column(ti).statistics
        if t.max < lo or t.min >= hi:
            continue
        if any(s.min <= x <= s.max for x in symbols):
            keep.append(i)
    return keep


def remote_bytes(paths: Sequence[Path], q: Query, lo: dt.datetime, hi: dt.datetime
                 ) -> dict[str, float]:
    """Bytes, files and requests a ranged reader needs; and the ideal bytes for the rows."""
    tally = {"files": 0, "bytes": 0, "requests": 0}
    cols = ["ts", "symbol", *q.columns]
    wanted, read_rows, matched, chunk_bytes = set(q.symbols), 0, 0, 0
    for path in paths:
        with CountingFile(path, tally) as fh:
            pf = pq.ParquetFile(fh, pre_buffer=False)
            groups = _groups(pf.metadata, wanted, lo, hi)
            if not groups:
                continue
            table = pf.read_row_groups(groups, columns=cols)
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        read_rows += frame.height
        matched += frame.filter(pl.col("symbol").is_in(q.symbols), pl.col("ts") >= lo,
                                pl.col("ts") < hi).height
        idx = [pf.metadata.schema.names.index(c) for c in cols]
        chunk_bytes += sum(pf.metadata.row_group(g).column(c).total_compressed_size
                           for g in groups for c in idx)
    ideal = chunk_bytes * matched / max(read_rows, 1)  # bytes of the requested rows/columns
    return {**tally, "ideal": ideal, "rows": matched}


def indexed_bytes(entries: Sequence[FileEntry], paths: Sequence[Path], q: Query,
                  lo: dt.datetime, hi: dt.datetime) -> dict[str, float]:
    """Bytes and requests of Pitwall's ranged read (chunk index, no footer) of ``q``."""
    tally = {"files": 0, "bytes": 0, "requests": 0}

    def counting(path: Path) -> Callable[[Sequence[tuple[int, int]]], list[bytes]]:
        def fetch(ranges: Sequence[tuple[int, int]]) -> list[bytes]:
            tally["files"] += 1
            with path.open("rb") as fh:
                out = []
                for start, end in ranges:
                    fh.seek(start)
                    out.append(fh.read(end - start))
                    tally["requests"] += 1
                    tally["bytes"] += end - start
            return out
        return fetch

    cols = ["ts", "symbol", *q.columns]
    frame = read_indexed(entries, [counting(p) for p in paths], q.symbols, lo, hi, cols)
    wanted, read_rows, chunk_bytes = set(q.symbols), 0, 0
    idx = [NAMES.index(c) for c in cols]
    for entry in entries:
        index = entry.index
        assert index is not None
        for g in entry.row_groups_for(wanted.intersection(entry.symbols)):
            read_rows += index.rows[g]
            chunk_bytes += sum(index.chunk(g, c)[1] - index.chunk(g, c)[0] for c in idx)
    ideal = chunk_bytes * frame.height / max(read_rows, 1)
    return {**tally, "ideal": ideal, "rows": frame.height}


def _bounds(q: Query) -> tuple[dt.datetime, dt.datetime]:
    lo = dt.datetime.combine(q.start, dt.time(), tzinfo=dt.UTC)
    return lo, dt.datetime.combine(q.end + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def polars_read(paths: Sequence[Path], q: Query) -> pl.DataFrame:
    """The generic Polars path for the other layouts (same pushdowns as load_bars)."""
    lo, hi = _bounds(q)
    return (pl.scan_parquet(list(paths), hive_partitioning=False)
            .filter(pl.col("symbol").is_in(q.symbols), pl.col("ts") >= lo, pl.col("ts") < hi)
            .select(["ts", "symbol", *q.columns]).sort("symbol", "ts").collect())


def duckdb_read(con: duckdb.DuckDBPyConnection, paths: Sequence[Path], q: Query) -> Any:
    lo, hi = _bounds(q)
    cols = ", ".join(["ts", "symbol", *q.columns])
    return con.sql(
        f"SELECT {cols} FROM read_parquet($paths) WHERE symbol IN (SELECT unnest($syms)) "
        "AND ts >= $lo AND ts < $hi ORDER BY symbol, ts",
        params={"paths": [str(p) for p in paths], "syms": q.symbols, "lo": lo, "hi": hi},
    ).to_arrow_table()


class Layouts:
    """File pruning per layout, from each layout's own metadata (no directory listing)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.catalog = Catalog(out / "ym_sorted")
        self.snapshot = self.catalog.snapshot("bars")
        self.ym = json.loads((out / "ym_symbol" / "manifest.json").read_text())
        self.bk = json.loads((out / "bucket_year" / "manifest.json").read_text())

    def files(self, layout: str, q: Query) -> list[Path]:
        months = {(d.year, d.month) for d in _days(q.start, q.end)}
        if layout == "ym_sorted":
            return [self.catalog.file_path("bars", f)
                    for f in plan(self.snapshot, q.symbols, q.start, q.end)]
        if layout == "ym_symbol":
            syms = set(q.symbols)
            return [self.out / "ym_symbol" / e["path"] for e in self.ym
                    if e["symbol"] in syms and (e["year"], e["month"]) in months]
        buckets = {bucket_of(s) for s in q.symbols}
        years = {y for y, _ in months}
        return [self.out / "bucket_year" / e["path"] for e in self.bk
                if e["bucket"] in buckets and e["year"] in years]


def _days(start: dt.date, end: dt.date) -> list[dt.date]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def _median(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm the page cache and the planner
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _reader(layouts: Layouts, layout: str, paths: list[Path], q: Query, *, cold: bool = False
            ) -> Callable[[], pl.DataFrame]:
    """Pitwall's own path for its layout (load_bars); the same Polars scan for the others.

    ``cold``: every call re-reads the snapshot JSON and decodes the chunk index anew (no
    metadata kept between calls), as DuckDB without its metadata cache reads footers."""
    if layout != "ym_sorted":
        return lambda: polars_read(paths, q)
    if not cold:
        return lambda: load_bars(layouts.catalog, layouts.snapshot, q.symbols, q.start,
                                 q.end, columns=q.columns)

    def cold_read() -> pl.DataFrame:
        _decode_index.cache_clear()
        snapshot = layouts.catalog.snapshot("bars")
        return load_bars(layouts.catalog, snapshot, q.symbols, q.start, q.end,
                         columns=q.columns)
    return cold_read


def duckdb_connection(metadata_cache: bool) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET parquet_metadata_cache = {'true' if metadata_cache else 'false'}")
    return con


def _normalized(frame: Any, q: Query) -> pl.DataFrame:
    """``frame`` (Polars or Arrow) as comparable rows: key columns first, one dtype per
    column, sorted by (symbol, ts)."""
    df = frame if isinstance(frame, pl.DataFrame) else pl.from_arrow(frame)
    assert isinstance(df, pl.DataFrame)
    ts = pl.col("ts")
    zone = df.schema["ts"].time_zone  # type: ignore[attr-defined]
    ts = ts.dt.replace_time_zone("UTC") if zone is None else ts.dt.convert_time_zone("UTC")
    return (df.select("ts", "symbol", *q.columns)
            .with_columns(ts.dt.cast_time_unit("us"), pl.col("symbol").cast(pl.String),
                          *(pl.col(c).cast(pl.Float64) for c in q.columns))
            .sort("symbol", "ts"))


def assert_same_rows(q: Query, layout: str, results: dict[str, Any]) -> int:
    """Every reader returned the same rows and values as DuckDB; the row count."""
    reference = _normalized(results["duck off"], q)
    if reference.is_empty():
        raise SystemExit(f"{q.name}: DuckDB returned no rows; the query tests nothing")
    for name, frame in results.items():
        try:
            assert_frame_equal(_normalized(frame, q), reference, check_exact=True)
        except AssertionError as exc:
            raise SystemExit(f"{q.name} ({layout}): {name} and DuckDB returned different "
                             f"rows: {exc}") from exc
    return reference.height


def queries(meta: dict[str, Any]) -> list[Query]:
    syms: list[str] = meta["symbols"]
    start, end = dt.date.fromisoformat(meta["start"]), dt.date.fromisoformat(meta["end"])
    mid = start + (end - start) / 2
    day = trading_days(mid, end)[0]
    month_end = min(dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)
                    - dt.timedelta(days=1), end)
    return [
        Query("a: 1 sym, all span, all cols", syms[:1], start, end, ALL),
        Query("a: 5 sym, all span, close+vol", syms[100:105], start, end, ["close", "volume"]),
        Query(f"b: {len(syms)} sym, 1 day, all cols", syms, day, day, ALL),
        Query(f"b: {len(syms)} sym, 1 month, all cols", syms, day.replace(day=1), month_end,
              ALL),
    ]


HEAD = (f"{'query':<34} {'layout':<12} {'pw idx':>8} {'pw cold':>8} {'duck on':>8} "
        f"{'duck off':>8} {'idx/on':>7} {'cold/off':>8} {'Mrows/s':>8} {'files':>6} "
        f"{'reqs':>6} {'MB read':>8} {'read/ideal':>10}")


def time_layout(layouts: Layouts, cons: dict[str, duckdb.DuckDBPyConnection], q: Query,
                layout: str, repeat: int) -> dict[str, float]:
    """Check the rows, then the median ms of each reader (``pw idx``/``pw cold`` for
    Pitwall's layout; ``pw cold`` alone, a Polars scan, for the others)."""
    paths = layouts.files(layout, q)
    readers: dict[str, Callable[[], object]] = {
        name: partial(duckdb_read, con, paths, q) for name, con in cons.items()}
    readers["pw cold"] = _reader(layouts, layout, paths, q, cold=True)
    if layout == "ym_sorted":
        readers["pw idx"] = _reader(layouts, layout, paths, q)
    rows = assert_same_rows(q, layout, {name: fn() for name, fn in readers.items()})
    times = {name: _median(fn, repeat) * 1e3 for name, fn in readers.items()}
    times["rows"] = rows
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/pitwall-layout-bench"))
    parser.add_argument("--layouts", default="ym_symbol,ym_sorted,bucket_year",
                        help="comma-separated subset to time")
    args = parser.parse_args()
    out = ensure(args.rows, args.scratch)
    meta = json.loads((out / "meta.json").read_text())
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"data: {meta['rows']:,} rows, {len(meta['symbols'])} symbols, "
          f"{meta['start']}..{meta['end']} in {out}; duckdb {duckdb.__version__}; "
          f"median of {args.repeat}; load {load}")
    layouts = Layouts(out)
    cons = {"duck on": duckdb_connection(True), "duck off": duckdb_connection(False)}
    print("rows asserted equal (same rows, same values, sorted) for every reader before "
          "its time is printed; ms = median")
    print(HEAD)
    for q in queries(meta):
        lo, hi = _bounds(q)
        for layout in args.layouts.split(","):
            t = time_layout(layouts, cons, q, layout, args.repeat)
            paths = layouts.files(layout, q)
            indexed = False
            if layout == "ym_sorted":
                entries = plan(layouts.snapshot, q.symbols, q.start, q.end)
                indexed = uses_index(entries, q.symbols, lo, hi)  # what load_bars does
            io_ = (indexed_bytes(entries, paths, q, lo, hi) if indexed
                   else remote_bytes(paths, q, lo, hi))
            idx = t.get("pw idx")
            best = idx if idx is not None else t["pw cold"]
            idx_cells = (f"{idx:8.1f}", f"{idx / t['duck on']:7.2f}") if idx else (
                f"{'-':>8}", f"{'-':>7}")
            print(f"{q.name:<34} {layout:<12} {idx_cells[0]} {t['pw cold']:8.1f} "
                  f"{t['duck on']:8.1f} {t['duck off']:8.1f} {idx_cells[1]} "
                  f"{t['pw cold'] / t['duck off']:8.2f} {t['rows'] / best / 1e3:8.1f} "
                  f"{io_['files']:6.0f} {io_['requests']:6.0f} {io_['bytes'] / 1e6:8.2f} "
                  f"{io_['bytes'] / max(io_['ideal'], 1):10.2f}", flush=True)
            if layout == "ym_sorted":  # the same files read the other way, for comparison
                io_ = (remote_bytes(paths, q, lo, hi) if indexed
                       else indexed_bytes(entries, paths, q, lo, hi))
                alt = "(footer)" if indexed else "(index)"
                print(f"{'':<34} {alt:<12} {'':>8} {'':>8} {'':>8} {'':>8} {'':>7} {'':>8} "
                      f"{'':>8} {io_['files']:6.0f} {io_['requests']:6.0f} "
                      f"{io_['bytes'] / 1e6:8.2f} {io_['bytes'] / max(io_['ideal'], 1):10.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
