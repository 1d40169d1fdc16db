"""Scratch data for bench/data_layout.py: one generated stream written in three layouts.

Written once under ``/tmp/pitwall-layout-bench/<rows>-<DATA_VERSION>/`` and reused (a
``.complete`` marker says the write finished). Memory is bounded by one month of 256 symbols.

Layouts:

- ``ym_symbol``: ``YYYY/MM/<symbol>.parquet``, one file per symbol and month (an early
  design).
- ``ym_sorted``: a Pitwall catalog (dataset ``bars``): one file per month sorted by
  ``(symbol, ts)``, row groups holding whole symbols (the catalog's writer).
- ``bucket_year``: ``bucket=NN/YYYY.parquet``, symbols hashed into 16 buckets, one file per
  bucket and year, one row group per symbol-month.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pitwall_executor.datalake import Catalog, sample_symbols
from pitwall_executor.datalake.bars_file import WRITER_OPTIONS
from pitwall_executor.datalake.generate import generate_month_chunks
from pitwall_executor.datalake.market_calendar import (
    session_minutes,
    trading_days,
    trading_minutes,
)

N_SYMBOLS = 520
BUCKETS = 16
FIRST_DAY = dt.date(2023, 1, 1)
SEED = 11
DATA_VERSION = "v2"  # bump when the writer changes (v2: chunk index, delta-encoded ts)


def bucket_of(symbol: str) -> int:
    """Stable hash bucket of a symbol."""
    return hashlib.sha256(symbol.encode()).digest()[0] % BUCKETS


def span_for(rows: int) -> tuple[dt.date, dt.date]:
    """The first and last day giving at least ``rows`` bars of N_SYMBOLS symbols."""
    days = trading_days(FIRST_DAY, FIRST_DAY + dt.timedelta(days=3650))
    total = 0
    for day in days:  # early closes have fewer bars than a full session
        total += N_SYMBOLS * session_minutes(day)
        if total >= rows:
            return FIRST_DAY, day
    return FIRST_DAY, days[-1]


class _BucketWriters:
    """One open ParquetWriter per bucket for the current year."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.year: int | None = None
        self.writers: dict[int, pq.ParquetWriter] = {}
        self.manifest: list[dict[str, object]] = []

    def write(self, year: int, symbol: str, table: pa.Table) -> None:
        if year != self.year:
            self.close()
            self.year = year
        b = bucket_of(symbol)
        if b not in self.writers:
            path = self.root / f"bucket={b:02d}" / f"{year}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writers[b] = pq.ParquetWriter(path, table.schema, **WRITER_OPTIONS)
            self.manifest.append({"path": str(path.relative_to(self.root)), "bucket": b,
                                  "year": year})
        self.writers[b].write_table(table, row_group_size=table.num_rows)

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers = {}


def _tee(chunks: Iterator[pl.DataFrame], out: Path, buckets: _BucketWriters,
         manifest: list[dict[str, object]], counter: list[int]) -> Iterator[pl.DataFrame]:
    """Pass chunks to the catalog writer while writing the two other layouts."""
    for chunk in chunks:
        ts0 = chunk["ts"][0]
        year, month = ts0.year, ts0.month
        table = chunk.to_arrow()
        offset = 0
        for run in chunk["symbol"].rle().struct.unnest().iter_rows(named=True):
            n, symbol = int(run["len"]), str(run["value"])
            part = table.slice(offset, n)
            offset += n
            path = out / "ym_symbol" / f"{year}" / f"{month:02d}" / f"{symbol}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(part, path, **WRITER_OPTIONS)  # same encodings in every layout
            manifest.append({"path": str(path.relative_to(out / "ym_symbol")), "symbol": symbol,
                             "year": year, "month": month})
            buckets.write(year, symbol, part)
        counter[0] += chunk.height
        yield chunk


def ensure(rows: int, scratch: Path) -> Path:
    """The scratch dir holding ``rows``+ bars in every layout, written if missing."""
    out = scratch / f"{rows}-{DATA_VERSION}"
    if (out / ".complete").exists():
        return out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    from tqdm import tqdm

    start, end = span_for(rows)
    symbols = sample_symbols(N_SYMBOLS)
    catalog = Catalog(out / "ym_sorted")
    buckets = _BucketWriters(out / "bucket_year")
    manifest: list[dict[str, object]] = []
    counter = [0]
    files = []
    total = trading_minutes(start, end) * N_SYMBOLS
    with tqdm(total=total, unit="rows", unit_scale=True, file=sys.stderr) as bar:
        for chunks in generate_month_chunks(symbols, start, end, seed=SEED, chunk_symbols=256):
            before = counter[0]
            files.append(catalog.write_frames("bars", _tee(chunks, out, buckets, manifest,
                                                           counter)))
            bar.update(counter[0] - before)
    buckets.close()
    catalog.commit("bars", files, message=f"layout bench {start}..{end}")
    (out / "ym_symbol" / "manifest.json").write_text(json.dumps(manifest))
    (out / "bucket_year" / "manifest.json").write_text(json.dumps(buckets.manifest))
    (out / "meta.json").write_text(json.dumps(
        {"rows": counter[0], "start": start.isoformat(), "end": end.isoformat(),
         "symbols": symbols}))
    (out / ".complete").write_text("ok\n")
    return out
