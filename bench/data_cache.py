"""The worker cache: reading a job's bars cold from an S3-compatible server vs warm from the
cache, and the warm read against reading exactly the needed bytes with pyarrow.

Starts moto's S3 server on loopback, generates two datasets in the current layout, pushes
them with :func:`push_dataset`, then times :func:`load_bars` through :class:`LakeFiles`:

* ``year``: one symbol × one year of minute bars (12 monthly files of 20 symbols);
* ``xsec``: the cross-section, 500 symbols × one month (one file).

Cold = cache emptied before each run (the S3 client stays connected, as in a worker);
warm = the files are cached. A cold read of a few symbols fetches and caches only their row
groups (``group_cache.py``), a cross-section whole files; each case prints the bytes a cold
run fetched (the cache's ``bytes_fetched``) against the bytes of the row groups it needs.
Cold and warm runs alternate (so both see the same load on a shared box); prints the
medians and the median of the per-pair ratios. The peer for the warm
one-symbol read is ``pyarrow.parquet`` reading only that symbol's row groups of the same
files on local disk (exactly the needed bytes). Run: ``.venv/bin/python bench/data_cache.py [N]``.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pitwall_executor.datalake.cache import FileCache
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.datalake.generate import sample_symbols
from pitwall_executor.datalake.group_cache import group_span
from pitwall_executor.datalake.lake_files import LakeFiles, push_dataset
from pitwall_executor.datalake.planner import load_bars, validate_request
from pitwall_executor.datalake.snapshot import FileEntry, Snapshot
from pitwall_executor.storage.s3 import S3ObjectStore

YEAR = (dt.date(2023, 1, 1), dt.date(2023, 12, 31))
MONTH = (dt.date(2023, 3, 1), dt.date(2023, 3, 31))


def start_moto(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (workdir / "moto.log").open("wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H",
                             "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("moto_server did not start; run `make bootstrap`")


def median_s(fn: Callable[[], object], n: int, before: Callable[[], object] | None = None
             ) -> float:
    times = []
    for _ in range(n):
        if before is not None:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pyarrow_exact(paths: list[Path], symbol: str) -> pa.Table:
    """Only ``symbol``'s row groups of each file, chosen from the footer statistics."""
    tables = []
    for path in paths:
        pf = pq.ParquetFile(path)
        col = pf.schema_arrow.get_field_index("symbol")
        groups = [i for i in range(pf.num_row_groups)
                  if (st := pf.metadata.row_group(i).column(col).statistics) is not None
                  and st.min <= symbol <= st.max]
        tables.append(pf.read_row_groups(groups))
    return pa.concat_tables(tables)


def needed_bytes(paths: list[Path], symbol: str) -> int:
    total = 0
    for path in paths:
        md = pq.ParquetFile(path).metadata
        col = md.schema.to_arrow_schema().get_field_index("symbol")
        for i in range(md.num_row_groups):
            st = md.row_group(i).column(col).statistics
            if st is not None and st.min <= symbol <= st.max:
                group = md.row_group(i)
                total += sum(group.column(j).total_compressed_size
                             for j in range(group.num_columns))
    return total


def paired(first: Callable[[], object], second: Callable[[], object], n: int,
           before_first: Callable[[], object] | None = None
           ) -> tuple[float, float, float]:
    """Run ``first`` and ``second`` alternately ``n`` times (the box is shared, so both
    see the same load); return their medians and the median of the per-pair ratios."""
    a, b = [], []
    for _ in range(n):
        if before_first is not None:
            before_first()
        start = time.perf_counter()
        first()
        a.append(time.perf_counter() - start)
        start = time.perf_counter()
        second()
        b.append(time.perf_counter() - start)
    ratio = statistics.median(x / y for x, y in zip(a, b, strict=True))
    return statistics.median(a), statistics.median(b), ratio


def case(name: str, lake: LakeFiles, catalog: Catalog, snap: Snapshot, symbols: list[str],
         span: tuple[dt.date, dt.date], n: int) -> tuple[float, float]:
    assert lake.cache is not None
    cache = lake.cache

    def read() -> None:
        load_bars(catalog, snap, symbols, *span, lake=lake)
        lake.release()

    read()  # first touch: imports, connections
    cache.evict_all()
    before = cache.metrics()["bytes_fetched"]
    read()
    fetched = cache.metrics()["bytes_fetched"] - before
    # Each pair: empty the cache, read cold (from S3), then read the same again warm.
    cold, warm, ratio = paired(read, read, n, before_first=cache.evict_all)
    files = validate_request(snap, symbols, *span)
    mib = sum(f.size for f in files) / 2**20
    need = group_bytes(files, symbols)
    print(f"{name:<34} {len(files):>3} files {mib:7.1f} MiB   cold {cold * 1e3:8.1f} ms   "
          f"warm {warm * 1e3:7.1f} ms   cold/warm {ratio:6.1f}x (median of {n} pairs; "
          "target >= 10x)", flush=True)
    print(f"{'':<34} cold fetched {fetched / 2**20:.2f} MiB for {need / 2**20:.2f} MiB of "
          f"needed row groups ({fetched / need:.2f}x; target <= 1.5x for few symbols)",
          flush=True)
    return cold, warm


def group_bytes(files: list[FileEntry], symbols: list[str]) -> int:
    """Bytes of the row groups of ``files`` holding ``symbols`` (all columns), by the index."""
    total = 0
    for f in files:
        assert f.index is not None
        for g in f.row_groups_for(set(symbols)):
            start, end = group_span(f.index, g)
            total += end - start
    return total


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        proc, endpoint = start_moto(work)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
        store = S3ObjectStore.from_url("s3://pitwall-bench/lake", endpoint_url=endpoint)
        try:
            store.ensure_bucket()
            local = Catalog(work / "lake")
            t0 = time.perf_counter()
            year = generate_dataset(local, "year", symbols=sample_symbols(20), start=YEAR[0],
                                    end=YEAR[1], seed=1)
            xsec = generate_dataset(local, "xsec", symbols=sample_symbols(500), start=MONTH[0],
                                    end=MONTH[1], seed=2)
            push_dataset(local, "year", store)
            push_dataset(local, "xsec", store)
            print(f"generated and pushed in {time.perf_counter() - t0:.1f} s; median of {n}")
            lake = LakeFiles(store, FileCache(work / "cache", 4 << 30))
            remote = lake.catalog(work / "mirror")
            symbol = sorted(year.symbols)[0]
            case(f"one symbol x one year ({symbol})", lake, remote, remote.snapshot("year"),
                 [symbol], YEAR, n)
            xsyms = sorted(xsec.symbols)
            case("cross-section 500 symbols x 1 month", lake, remote, remote.snapshot("xsec"),
                 xsyms, MONTH, n)
            warm_vs_pyarrow(lake, remote, local, remote.snapshot("year"), symbol, n)
        finally:
            store.close()
            proc.terminate()
            proc.wait()


def warm_vs_pyarrow(lake: LakeFiles, catalog: Catalog, local: Catalog, snap: Snapshot,
                    symbol: str, n: int) -> None:
    files = validate_request(snap, [symbol], *YEAR)
    paths = [local.file_path(snap.dataset, f) for f in files]  # the same bytes, whole files
    n = max(n, 41)  # millisecond timings: more samples
    groups = [f.row_groups_for({symbol}) for f in files]

    def read() -> None:
        load_bars(catalog, snap, [symbol], *YEAR, lake=lake)
        lake.release()

    def lookup_only() -> None:
        lake.fetches(snap.dataset, files, groups)
        lake.release()

    read()  # the symbol's row groups into the cache (the cross-section case evicted them)

    pitwall, peer, ratio = paired(read, lambda: pyarrow_exact(paths, symbol), n)
    lookup = median_s(lookup_only, n)
    rows = pyarrow_exact(paths, symbol).num_rows
    need = needed_bytes(paths, symbol)
    total = sum(p.stat().st_size for p in paths)
    print(f"warm one symbol x one year: {rows:,} rows; load_bars {pitwall * 1e3:.1f} ms "
          f"(target <= 15 ms), of which cache lookup {lookup * 1e3:.2f} ms; pyarrow reading "
          f"exactly its row groups ({need / 2**20:.2f} of {total / 2**20:.2f} MiB) "
          f"{peer * 1e3:.1f} ms; ratio {ratio:.2f}x (median of {n} pairs; target <= 1.5x); "
          f"load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
