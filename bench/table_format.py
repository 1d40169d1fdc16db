"""Delta Lake vs Apache Iceberg vs Pitwall's snapshot-JSON catalog: decision 0001's figures.

The same generated months are committed to each format one month per commit (an ingest a
month), each month a file sorted by (symbol, ts) with row groups of one symbol. Then, per
format: commit time, time to plan a query from metadata alone (open the pinned version and
list the files for symbols + range), read time for pattern (a) and (b) through Polars
(``scan_delta(version=)``, ``scan_iceberg(snapshot_id=)``, ``load_bars``), time travel to
the first version, and whether retention can keep a pinned old version's files.

    .venv/bin/python bench/table_format.py --symbols 100 --months 6
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import DeltaTable, WriterProperties, write_deltalake
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import And, GreaterThanOrEqual, In, LessThan

from pitwall_executor.datalake import Catalog, load_bars, plan, sample_symbols
from pitwall_executor.datalake.generate import generate_bars

os.environ.setdefault("POLARS_ICEBERG_PLANNER", "pyiceberg")  # the plugin is not installed
ROW_GROUP = 8_190  # one symbol-month of minute bars (21 days x 390)


def _median(fn: Callable[[], object], repeat: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _filter(lf: pl.LazyFrame, syms: list[str], lo: dt.datetime, hi: dt.datetime,
            cols: list[str]) -> pl.DataFrame:
    return (lf.filter(pl.col("symbol").is_in(syms), pl.col("ts") >= lo, pl.col("ts") < hi)
            .select(["ts", "symbol", *cols]).sort("symbol", "ts").collect())


class Own:
    name = "pitwall-json"

    def __init__(self, root: Path) -> None:
        self.cat = Catalog(root)
        self.files: list[Any] = []

    def commit(self, frame: pl.DataFrame) -> None:
        self.files.append(self.cat.write_file("bars", frame))
        self.cat.commit("bars", list(self.files), message="month")

    def plan(self, version: int, syms: list[str], lo: dt.date, hi: dt.date) -> int:
        return len(plan(self.cat.snapshot("bars", version), syms, lo, hi))

    def read(self, version: int, syms: list[str], lo: dt.date, hi: dt.date,
             cols: list[str]) -> int:
        return load_bars(self.cat, self.cat.snapshot("bars", version), syms, lo, hi,
                         columns=cols).height


class Delta:
    name = "delta"

    def __init__(self, root: Path) -> None:
        self.uri = str(root / "bars")
        self.props = WriterProperties(max_row_group_size=ROW_GROUP, compression="ZSTD")

    def commit(self, frame: pl.DataFrame) -> None:
        write_deltalake(self.uri, frame.to_arrow(), mode="append", writer_properties=self.props)

    def plan(self, version: int, syms: list[str], lo: dt.date, hi: dt.date) -> int:
        # File skipping from the add actions' min/max statistics (metadata only).
        table = DeltaTable(self.uri, version=version - 1)  # Delta counts from 0
        adds = pl.DataFrame(table.get_add_actions(flatten=True))  # arro3 table
        lo_ts, hi_ts = _bounds(lo, hi)
        kept = adds.filter(pl.col("max.ts") >= lo_ts, pl.col("min.ts") < hi_ts,
                           pl.col("max.symbol") >= min(syms), pl.col("min.symbol") <= max(syms))
        return kept.height

    def read(self, version: int, syms: list[str], lo: dt.date, hi: dt.date,
             cols: list[str]) -> int:
        return _filter(pl.scan_delta(self.uri, version=version - 1), syms, *_bounds(lo, hi),
                       cols).height


class Iceberg:
    name = "iceberg"

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True)
        self.catalog = SqlCatalog("bench", uri=f"sqlite:///{root}/catalog.db",
                                  warehouse=f"file://{root}")
        self.catalog.create_namespace("lake")
        self.table: Any = None
        self.snapshots: list[int] = []

    def commit(self, frame: pl.DataFrame) -> None:
        arrow = frame.to_arrow()
        if self.table is None:
            self.table = self.catalog.create_table(
                "lake.bars", schema=arrow.schema,
                properties={"write.parquet.row-group-limit": str(ROW_GROUP),
                            "write.parquet.compression-codec": "zstd"})
        self.table.append(arrow)
        self.snapshots.append(self.table.current_snapshot().snapshot_id)

    def plan(self, version: int, syms: list[str], lo: dt.date, hi: dt.date) -> int:
        table = self.catalog.load_table("lake.bars")
        lo_ts, hi_ts = _bounds(lo, hi)
        expr = And(In("symbol", set(syms)), And(GreaterThanOrEqual("ts", lo_ts.isoformat()),
                                                LessThan("ts", hi_ts.isoformat())))
        return len(list(table.scan(row_filter=expr,
                                   snapshot_id=self.snapshots[version - 1]).plan_files()))

    def read(self, version: int, syms: list[str], lo: dt.date, hi: dt.date,
             cols: list[str]) -> int:
        table = self.catalog.load_table("lake.bars")
        lf = pl.scan_iceberg(table, snapshot_id=self.snapshots[version - 1])
        return _filter(lf, syms, *_bounds(lo, hi), cols).height


def _bounds(lo: dt.date, hi: dt.date) -> tuple[dt.datetime, dt.datetime]:
    a = dt.datetime.combine(lo, dt.time(), tzinfo=dt.UTC)
    return a, dt.datetime.combine(hi + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--months", type=int, default=6)
    args = parser.parse_args()
    syms = sample_symbols(args.symbols)
    start = dt.date(2024, 1, 1)
    end = dt.date(2024 + (args.months - 1) // 12, (args.months - 1) % 12 + 1, 28)
    months = list(generate_bars(syms, start, end, seed=3))
    rows = sum(m.height for m in months)
    print(f"{rows:,} rows, {args.symbols} symbols, {len(months)} monthly commits")
    mid = months[len(months) // 2]["ts"][0].date()
    queries = {
        "a: 1 sym all span": (syms[:1], start, end, ["open", "high", "low", "close", "volume"]),
        "a: 5 sym close": (syms[10:15], start, end, ["close"]),
        "b: all sym 1 day": (syms, mid, mid, ["close", "volume"]),
    }
    scratch = Path(tempfile.mkdtemp(prefix="pwl-tablefmt-"))
    print(f"{'format':<13} {'commit ms/mo':>12} {'plan ms':>8} "
          + " ".join(f"{q:>18}" for q in queries) + f" {'v1 read ms':>10}")
    try:
        for cls in (Own, Delta, Iceberg):
            fmt = cls(scratch / cls.name)  # type: ignore[abstract]
            t0 = time.perf_counter()
            for m in months:
                fmt.commit(m)
            commit = (time.perf_counter() - t0) / len(months)
            last = len(months)
            plan_s = _median(lambda f=fmt, v=last: f.plan(v, syms[:5], start, end), 20)
            reads = [_median(lambda f=fmt, q=q, v=last: f.read(v, *q))
                     for q in queries.values()]
            v1 = _median(lambda f=fmt: f.read(1, syms[:1], start, end, ["close"]))
            print(f"{fmt.name:<13} {commit * 1e3:12.1f} {plan_s * 1e3:8.2f} "
                  + " ".join(f"{r * 1e3:18.1f}" for r in reads) + f" {v1 * 1e3:10.1f}",
                  flush=True)
        du = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
              for p in scratch.iterdir()}
        print("bytes on disk: " + ", ".join(f"{k}={v / 1e6:.1f} MB" for k, v in du.items()))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
