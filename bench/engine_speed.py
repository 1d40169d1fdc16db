"""Speed of the vectorized engine on 100 symbols × 98,280 one-minute bars (252 days × 390).

Prints the best of several runs of ``run_vectorized`` (dense weights, with costs) and its
ratio to the physical floor of the task: one read of the open and close prices and one
write of a same-sized array (``np.divide(close, open)``), a memory-bandwidth bound.

    .venv/bin/python bench/engine_speed.py [--symbols 100] [--days 252] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import polars as pl

from pitwall.engine import run_vectorized
from pitwall.models import Costs


def make_bars(n_symbols: int, n_days: int, seed: int = 0) -> pl.DataFrame:
    """Random-walk minute bars, sorted by (symbol, ts), every symbol on every timestamp."""
    rng = np.random.default_rng(seed)
    day = np.datetime64("2024-01-02T14:30", "us") + np.arange(n_days) * np.timedelta64(1, "D")
    ts = (day[:, None] + np.arange(390) * np.timedelta64(60, "s")).ravel()
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, (n_symbols, ts.size)), axis=1))
    open_ = close * np.exp(rng.normal(0, 2e-4, close.shape))
    return pl.DataFrame({
        "ts": np.tile(ts, n_symbols),
        "symbol": np.repeat([f"S{i:03d}" for i in range(n_symbols)], ts.size),
        "open": open_.ravel(),
        "high": np.maximum(open_, close).ravel(),
        "low": np.minimum(open_, close).ravel(),
        "close": close.ravel(),
        "volume": np.full(close.size, 100, dtype=np.int64),
    }).with_columns(pl.col("ts").dt.replace_time_zone("UTC"))


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    """Best wall time of ``repeat`` calls (the machine may be shared; the best is the cost)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--days", type=int, default=252)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    bars = make_bars(args.symbols, args.days)
    rng = np.random.default_rng(1)
    # A signal that changes every bar: the worst case for the cost solver.
    weights = bars.select("ts", "symbol", weight=pl.Series(rng.uniform(0, 0.02, bars.height)))
    costs = Costs(commission_bps=1, slippage_bps=2)
    engine = best_of(args.repeat, lambda: run_vectorized(bars, weights, capital=1e6, costs=costs))
    o, c = bars.get_column("open").to_numpy(), bars.get_column("close").to_numpy()
    floor = best_of(args.repeat, lambda: np.divide(c, o))
    print(f"{args.symbols} symbols × {bars.height // args.symbols} bars ({bars.height:,} rows)")
    print(f"run_vectorized: {engine:.3f} s  ({bars.height / engine / 1e6:.1f} M bars/s)")
    print(f"floor (one pass over open, close): {floor:.3f} s  ratio {engine / floor:.1f}×")


if __name__ == "__main__":
    main()
