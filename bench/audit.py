"""What the lookahead audit costs: in the sandbox (re-runs) and in the worker (comparison).

Runs ``python -m pitwall.sandbox.runner`` (unsandboxed: the sandbox adds the same start-up to
both) on the same job with and without the audit plan, and times the trusted comparison
against the trusted engine on the same weights. Prints the ratios.

    .venv/bin/python bench/audit.py --symbols 20 --days 63
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from pitwall.engine.audit import audit_weights, choose_cuts, split_run
from pitwall.engine.validate import validate_weights
from pitwall.engine.vectorized import run_vectorized
from pitwall.models import Costs

ROOT = Path(__file__).resolve().parents[1]
T0 = dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC)


def make_bars(n_symbols: int, days: int) -> pl.DataFrame:
    rng = np.random.default_rng(1)
    minutes = (np.arange(days)[:, None] * 1440 + np.arange(390)[None, :]).ravel()
    ts = np.datetime64(T0.replace(tzinfo=None), "us") + minutes.astype("timedelta64[m]")
    n = len(ts)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, (n_symbols, n)), axis=1))
    open_ = np.concatenate([close[:, :1], close[:, :-1]], axis=1)
    return pl.DataFrame({
        "ts": np.tile(ts, n_symbols), "symbol": np.repeat([f"S{i:03d}" for i in
                                                            range(n_symbols)], n),
        "open": open_.ravel(), "high": np.maximum(open_, close).ravel(),
        "low": np.minimum(open_, close).ravel(), "close": close.ravel(),
        "volume": np.full(n * n_symbols, 1000, dtype=np.int64),
    }).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))


def run_runner(job: Path, bars: pl.DataFrame, audit: dict[str, object] | None) -> tuple[float,
                                                                                         bytes]:
    spec = {"entrypoint": "sma_crossover.py", "params": {"fast": 10, "slow": 60}, "seed": 0,
            "audit": audit}
    (job / "input" / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONHASHSEED": "0", "TZ": "UTC"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pitwall.sandbox.runner", str(job)], env=env,
                          capture_output=True, check=True)
    return time.perf_counter() - start, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--days", type=int, default=63)
    args = parser.parse_args()
    bars = make_bars(args.symbols, args.days)
    universe = sorted(set(bars.get_column("symbol").to_list()))
    cuts = choose_cuts(bars)
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp)
        (job / "input").mkdir()
        (job / "bundle").mkdir()
        (job / "bundle" / "sma_crossover.py").write_bytes(
            (ROOT / "examples" / "sma_crossover.py").read_bytes())
        bars.write_ipc(job / "input" / "bars.arrow")
        plain_s, _ = run_runner(job, bars, None)
        audit_s, stdout = run_runner(job, bars, {"cuts": cuts, "max_bytes": 2**31,
                                                 "max_seconds": 3600})
    start = time.perf_counter()
    table, outputs = split_run(stdout, n_cuts=len(cuts), max_bytes=2**31)
    weights = validate_weights(table, bars, universe)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    verdict = audit_weights(bars, weights, cuts, outputs, universe)
    compare_s = time.perf_counter() - start
    start = time.perf_counter()
    run_vectorized(bars, weights, capital=1e6, costs=Costs())
    engine_s = time.perf_counter() - start
    print(f"{args.symbols} symbols x {args.days} days = {bars.height:,} bars; "
          f"{len(cuts)} cuts; verdict {verdict.status}")
    print(f"sandbox side: runner without audit {plain_s:.2f} s, with audit {audit_s:.2f} s "
          f"-> {audit_s / plain_s:.2f}x")
    print(f"worker side: decode+validate {decode_s:.2f} s; audit comparison {compare_s:.2f} s "
          f"vs engine {engine_s:.2f} s -> {compare_s / engine_s:.2f}x the engine")


if __name__ == "__main__":
    main()
