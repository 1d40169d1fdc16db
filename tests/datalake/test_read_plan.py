"""Read planning from metadata: files, row groups, and Polars pushdown (checked by explain)."""

from __future__ import annotations

import datetime as dt
import resource
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from pitwall_executor.datalake import Catalog, Snapshot, sample_symbols
from pitwall_executor.datalake.generate import generate_bars, generate_month_chunks
from pitwall_executor.datalake.planner import plan_read, scan_bars

Lake = tuple[Catalog, Snapshot]
D = dt.date


def test_plan_read_names_the_files_and_row_groups_of_the_symbols(lake: Lake) -> None:
    catalog, snapshot = lake
    got = plan_read(snapshot, ["AAPL", "XOM"], D(2024, 3, 1), D(2024, 4, 10), ["close"])
    assert [f.min_ts.month for f in got.files] == [3, 4]
    assert got.columns == ("ts", "symbol", "close")
    for entry, groups in zip(got.files, got.row_groups, strict=True):
        meta = pq.ParquetFile(catalog.file_path("sample", entry)).metadata
        col = meta.schema.names.index("symbol")
        held = [meta.row_group(i).column(col).statistics for i in range(meta.num_row_groups)]
        expect = [i for i, st in enumerate(held) if st.min <= "AAPL" <= st.max
                  or st.min <= "XOM" <= st.max]
        assert list(groups) == expect and len(groups) == 2
    assert got.n_row_groups == 4


def test_scan_pushes_the_filters_and_the_projection_into_the_parquet_scan(lake: Lake) -> None:
    catalog, snapshot = lake
    lo = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    hi = dt.datetime(2024, 3, 2, tzinfo=dt.UTC)
    paths = [catalog.file_path("sample", f) for f in snapshot.files]
    plan = scan_bars(paths, ["AAPL"], lo, hi, ["ts", "symbol", "close"]).explain()
    scan_line = next(line for line in plan.splitlines() if "Parquet SCAN" in line)
    below = plan[plan.index(scan_line):]
    assert "PROJECT 3/7 COLUMNS" in below
    assert "SELECTION:" in below and "AAPL" in below.split("SELECTION:", 1)[1]
    assert "FILTER" not in plan  # nothing left to filter after the scan


def test_chunked_generation_streams_with_bounded_memory(tmp_path: Path) -> None:
    syms = sample_symbols(12)
    a = list(generate_bars(syms, D(2024, 1, 1), D(2024, 2, 5), seed=9))
    b = [pl.concat(list(c)) for c in generate_month_chunks(syms, D(2024, 1, 1), D(2024, 2, 5),
                                                           seed=9, chunk_symbols=5)]
    assert len(a) == len(b) == 2 and all(x.equals(y) for x, y in zip(a, b, strict=True))

    def peak_mb(n_symbols: int) -> float:
        code = (
            "import datetime as dt, resource\n"
            "from pathlib import Path\n"
            "from pitwall_executor.datalake import Catalog, generate_dataset, sample_symbols\n"
            f"generate_dataset(Catalog(Path({str(tmp_path)!r}) / 'l{n_symbols}'), 'd', "
            f"symbols=sample_symbols({n_symbols}), start=dt.date(2024, 1, 1), "
            "end=dt.date(2024, 1, 31), seed=1, chunk_symbols=32)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                             text=True)
        return int(out.stdout.split()[-1]) / 1024

    small, large = peak_mb(32), peak_mb(256)
    # 8x the symbols (and rows) in one month file; memory grows far less than 8x.
    assert large < small + 200, (small, large)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0


def test_the_row_group_index_is_exact_for_packed_and_spilling_symbols(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    day = next(generate_bars(sample_symbols(40), D(2024, 1, 2), D(2024, 1, 2), seed=2))
    # 40 symbols x 390 bars: several symbols per group (min 4,096 rows), sent in 3 chunks
    # that cut symbols in the middle.
    entry = catalog.write_frames("d", [day.slice(0, 5000), day.slice(5000, 3000),
                                       day.slice(8000)])
    meta = pq.ParquetFile(catalog.file_path("d", entry)).metadata
    col = meta.schema.names.index("symbol")
    for symbol in sorted(set(day["symbol"])):
        held = [i for i in range(meta.num_row_groups)
                if meta.row_group(i).column(col).statistics.min <= symbol
                <= meta.row_group(i).column(col).statistics.max]
        assert entry.row_groups_for({symbol}) == held, symbol
    assert meta.num_row_groups == len(entry.row_group_symbols) > 2
