"""Ingest and corrections: merge new bars into a dataset as a new version.

For each symbol in the incoming bars, they replace that symbol's bars over the incoming time
span (so a vendor correction that drops a bar removes it too); everything else is kept.
Only the month files the span touches are rewritten, one month at a time (memory bounded
by a month file); untouched files are carried into the new version unchanged, by hash.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from pitwall.errors import DataError
from pitwall_executor.datalake.generate import BARS_SCHEMA

if TYPE_CHECKING:
    from pitwall_executor.datalake.catalog import Catalog
    from pitwall_executor.datalake.snapshot import FileEntry, Snapshot


def _month_bounds(ts: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    lo = dt.datetime(ts.year, ts.month, 1, tzinfo=dt.UTC)
    hi = dt.datetime(ts.year + ts.month // 12, ts.month % 12 + 1, 1, tzinfo=dt.UTC)
    return lo, hi


def upsert(
    catalog: Catalog,
    dataset: str,
    bars: pl.DataFrame,
    *,
    message: str,
    properties: Mapping[str, Any] | None = None,
) -> Snapshot:
    """Commit ``bars`` into ``dataset`` as its next version (the first one if it is new).

    ``bars`` must have :data:`BARS_SCHEMA`; they need not be sorted.
    """
    if bars.schema != BARS_SCHEMA:
        raise DataError(f"bars must have schema {dict(BARS_SCHEMA)}; got {dict(bars.schema)}")
    if bars.is_empty():
        raise DataError("nothing to ingest: every row was rejected or the input is empty")
    spans = bars.group_by("symbol").agg(pl.col("ts").min().alias("lo"),
                                        pl.col("ts").max().alias("hi"))
    files: list[FileEntry] = (
        list(catalog.snapshot(dataset).files) if dataset in catalog.datasets() else [])
    months = bars.select(pl.col("ts").dt.truncate("1mo").unique().sort()).to_series()
    for start in months:
        lo, hi = _month_bounds(start)
        touched = [f for f in files if f.min_ts < hi and f.max_ts >= lo]
        incoming = bars.filter(pl.col("ts") >= lo, pl.col("ts") < hi)
        kept = _kept_rows(catalog, dataset, touched, spans)
        merged = pl.concat([kept, incoming]).sort("symbol", "ts")
        files = [f for f in files if f not in touched]
        # A touched file may reach beyond this month (written by another tool): its other
        # months are rewritten as files of their own, never dropped.
        for (_,), part in merged.group_by(pl.col("ts").dt.truncate("1mo"), maintain_order=True):
            files.append(catalog.write_file(dataset, part.sort("symbol", "ts")))
    return catalog.commit(dataset, files, message=message, properties=properties)


def _kept_rows(catalog: Catalog, dataset: str, touched: list[FileEntry],
               spans: pl.DataFrame) -> pl.DataFrame:
    """Rows of ``touched`` files not replaced by the incoming bars."""
    if not touched:
        return pl.DataFrame(schema=BARS_SCHEMA)
    old = pl.read_parquet([catalog.file_path(dataset, f) for f in touched]).cast(BARS_SCHEMA)
    inside = (pl.col("ts") >= pl.col("lo")) & (pl.col("ts") <= pl.col("hi"))
    return (old.join(spans, on="symbol", how="left")
            .filter(~inside.fill_null(False)).select(BARS_SCHEMA.names()))
