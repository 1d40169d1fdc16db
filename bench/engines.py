"""SMA(10/50) crossover on one-minute bars: Pitwall's SMA sweep kernel against its peers.

SPECIAL CASE, NOT THE PATH JOBS USE. The ``pitwall`` row times ``sma_crossover_sweep``, a
hand-written closed form of this one strategy with its own Numba kernel (a notebook
research tool). No job, CLI or API run goes through it: those run the strategy's weights
through ``validate_weights`` → ``run_vectorized`` → ``compute_metrics``, timed against
vectorbt and a Numba loop by ``bench/official_path.py``.

Same strategy, same data (``generate_bars``: 98,280 bars per symbol, a year of minutes),
same conventions (long when SMA(10) > SMA(50) of the close, decided at the close, filled
at the next open, marked at every close, no costs, whole equity). Cases: one symbol, a
100-pair sweep on one symbol, 100 symbols (each an independent book, as vectorbt's
columns are). Peers: a plain NumPy implementation, a Numba loop (the compiled-loop
limit), vectorbt. Each engine's equity is checked against the NumPy reference. Prints
best-of-N times and ratios, then the peak NumPy memory of 100 symbols against the input
columns the work needs (open and close).

    .venv/bin/python bench/engines.py [--repeat 3] [--symbols 100]
"""

from __future__ import annotations

import argparse
import datetime as dt
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pandas as pd
import polars as pl
import vectorbt as vbt

from pitwall.engine import run_vectorized
from pitwall.models import Costs
from pitwall.notebook.sweep import rolling_means, sma_crossover_sweep
from pitwall_executor.datalake.generate import generate_bars

BARS_PER_SYMBOL = 98_280
PAIR = (10, 50)
PAIRS = [(f, s) for f in range(5, 55, 5) for s in range(60, 260, 20)]  # 100 pairs


def load(n_symbols: int) -> pl.DataFrame:
    """A year of generated minute bars, the first 98,280 per symbol, sorted (symbol, ts)."""
    symbols = [f"S{i:03d}" for i in range(n_symbols)]
    frames = generate_bars(symbols, dt.date(2024, 1, 1), dt.date(2024, 12, 31), seed=7)
    bars = pl.concat(list(frames)).sort("symbol", "ts")
    return bars.group_by("symbol", maintain_order=True).head(BARS_PER_SYMBOL)


def best(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Best wall time of ``repeat`` calls (the machine is shared) and the last result."""
    times, out = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def numpy_reference(opens: np.ndarray, closes: np.ndarray, pairs: list[tuple[int, int]]
                    ) -> np.ndarray:
    """Plain NumPy: signal, position held from the next open, equity per close (unit capital)."""
    rows = []
    for o, c in zip(opens, closes, strict=True):
        means = rolling_means(c, [w for p in pairs for w in p])
        for f, s in pairs:
            pos = (means[f] > means[s]).astype(np.float64)
            # Held in bar t (from its open): the decision of t−1.
            gap = np.ones_like(c)  # close(t−1) → open(t): still bar t−1's holding
            gap[2:] = 1.0 + pos[:-2] * (o[2:] / c[1:-1] - 1.0)
            bar = np.ones_like(c)  # open(t) → close(t)
            bar[1:] = 1.0 + pos[:-1] * (c[1:] / o[1:] - 1.0)
            rows.append(np.cumprod(gap * bar))
    return np.array(rows)


@numba.njit(cache=True)
def _numba_books(o: np.ndarray, c: np.ndarray, fast: np.ndarray, slow: np.ndarray,
                 out: np.ndarray) -> None:
    # Means from a running cumulative sum, as the others compute them (equal signals).
    csum = np.empty(len(c) + 1)
    csum[0] = 0.0
    for t in range(len(c)):
        csum[t + 1] = csum[t] + c[t]
    for r in range(len(fast)):
        f, s = fast[r], slow[r]
        pos, held, equity = 0.0, 0.0, 1.0
        out[r, 0] = 1.0
        for t in range(len(c)):
            if t > 0:
                equity *= 1.0 + held * (o[t] / c[t - 1] - 1.0)
                held = pos  # the decision of t−1, traded at this open
                equity *= 1.0 + held * (c[t] / o[t] - 1.0)
                out[r, t] = equity
            if t >= s - 1:
                above = (csum[t + 1] - csum[t + 1 - f]) / f > (csum[t + 1] - csum[t + 1 - s]) / s
                pos = 1.0 if above else 0.0


def numba_reference(opens: np.ndarray, closes: np.ndarray, pairs: list[tuple[int, int]]
                    ) -> np.ndarray:
    """One compiled pass per (symbol, pair): running sums, position, equity."""
    fast = np.array([f for f, _ in pairs], dtype=np.int64)
    slow = np.array([s for _, s in pairs], dtype=np.int64)
    out = np.empty((len(opens) * len(pairs), opens.shape[1]))
    for i in range(len(opens)):
        _numba_books(opens[i], closes[i], fast, slow, out[i * len(pairs):(i + 1) * len(pairs)])
    return out


def vectorbt_run(opens: np.ndarray, closes: np.ndarray, pairs: list[tuple[int, int]]
                 ) -> np.ndarray:
    """vectorbt: MA indicator, crossover signals shifted one bar, filled at the open."""
    index = pd.RangeIndex(opens.shape[1])
    close = pd.DataFrame(closes.T, index=index)
    open_ = pd.DataFrame(opens.T, index=index)
    fast = vbt.MA.run(close, [f for f, _ in pairs], short_name="fast", per_column=False)
    slow = vbt.MA.run(close, [s for _, s in pairs], short_name="slow", per_column=False)
    # One column per (pair, symbol): align the two MA outputs by position.
    above = pd.DataFrame(fast.ma.to_numpy() > slow.ma.to_numpy(), index=index)
    held = above.shift(1, fill_value=False)  # decided at t's close, held from t+1's open
    entries = held & ~held.shift(1, fill_value=False)
    exits = ~held & held.shift(1, fill_value=False)
    reps = len(pairs)
    portfolio = vbt.Portfolio.from_signals(
        pd.concat([close] * reps, axis=1, ignore_index=True), entries, exits,
        price=pd.concat([open_] * reps, axis=1, ignore_index=True),
        init_cash=1.0, size=np.inf, fees=0.0, freq="1min",
    )
    value = portfolio.value().to_numpy().T
    # vectorbt's columns are pair-major; reorder symbol-major like the others.
    return value.reshape(reps, len(opens), -1).transpose(1, 0, 2).reshape(-1, value.shape[1])


def pitwall_run(bars: pl.DataFrame, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Pitwall's SMA sweep kernel (independent one-symbol books), unit capital.

    The special case: ``sma_crossover_sweep``, not the path jobs run.
    """
    return sma_crossover_sweep(bars, pairs, capital=1.0)[1]


def portfolio_weights(bars: pl.DataFrame) -> pl.DataFrame:
    """The same signal as one 100-symbol book: each symbol 1/N of equity when long."""
    n = bars.get_column("symbol").n_unique()
    means = [pl.col("close").rolling_mean(w).over("symbol") for w in PAIR]
    return bars.select("ts", "symbol", weight=pl.when(means[0] > means[1]).then(1.0 / n)
                       .otherwise(0.0))


def compare(label: str, times: dict[str, float], curves: dict[str, np.ndarray]) -> None:
    """Print each engine's time, its ratio to Pitwall and its worst deviation from NumPy."""
    ref = curves["numpy"]
    print(f"\n{label}  (pitwall = the SMA sweep kernel, a special case not used by jobs)")
    for name, seconds in times.items():
        dev = float(np.max(np.abs(curves[name] / ref - 1.0)))
        print(f"  {name:8s} {seconds * 1e3:9.2f} ms   x{seconds / times['pitwall']:7.2f} of "
              f"pitwall SMA kernel   max rel dev from numpy {dev:.1e}")


def _peak_rss_since_reset() -> int:
    """Peak resident memory (bytes) since the last write of 5 to /proc/self/clear_refs."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _measured(fn: Callable[[], Any]) -> tuple[int, int]:
    """(peak NumPy allocation by tracemalloc, peak RSS growth) while ``fn`` runs."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (Linux)
    base = _rss()
    tracemalloc.start()
    fn()
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return traced, _peak_rss_since_reset() - base


def measure_memory(bars: pl.DataFrame) -> None:
    """Peak memory of 100 symbols against the open and close columns the work reads."""
    inputs = bars.get_column("open").to_numpy().nbytes * 2
    mb = 2**20
    print(f"\nmemory, {bars.height:,} bars: input columns open+close {inputs / mb:.0f} MB")
    traced, rss = _measured(lambda: pitwall_run(bars, [PAIR]))
    print(f"  independent books (output: {bars.height * 8 / mb:.0f} MB of equity): NumPy peak "
          f"{traced / mb:.0f} MB = {traced / inputs:.2f}x, peak RSS growth {rss / mb:.0f} MB "
          f"= {rss / inputs:.2f}x inputs")
    weights = portfolio_weights(bars)
    traced, rss = _measured(lambda: run_vectorized(bars, weights, capital=1e6, costs=Costs()))
    print(f"  run_vectorized, one 100-symbol book (+ the {bars.height * 8 / mb:.0f} MB weight "
          f"column): NumPy peak {traced / mb:.0f} MB = {traced / inputs:.2f}x, peak RSS growth "
          f"{rss / mb:.0f} MB = {rss / inputs:.2f}x open+close")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--symbols", type=int, default=100)
    args = parser.parse_args()
    bars = load(args.symbols)
    n, t_len = args.symbols, bars.height // args.symbols
    opens = bars.get_column("open").to_numpy().reshape(n, t_len)
    closes = bars.get_column("close").to_numpy().reshape(n, t_len)
    one = bars.head(t_len)
    print(f"{n} symbols × {t_len:,} one-minute bars; numba {numba.__version__}, "
          f"vectorbt {vbt.__version__}")
    # Compile (and load numba caches) outside the timings.
    numba_reference(opens[:1, :300], closes[:1, :300], [PAIR])
    pitwall_run(one.head(300), [PAIR])
    vectorbt_run(opens[:1, :300], closes[:1, :300], [PAIR])
    cases = [("1 symbol, SMA(10/50)", opens[:1], closes[:1], one, [PAIR]),
             ("100-pair sweep, 1 symbol", opens[:1], closes[:1], one, PAIRS),
             (f"{n} symbols, SMA(10/50)", opens, closes, bars, [PAIR])]
    for label, o, c, frame, pairs in cases:
        runs: dict[str, Callable[[], np.ndarray]] = {
            "pitwall": lambda frame=frame, pairs=pairs: pitwall_run(frame, pairs),
            "numba": lambda o=o, c=c, pairs=pairs: numba_reference(o, c, pairs),
            "numpy": lambda o=o, c=c, pairs=pairs: numpy_reference(o, c, pairs),
            "vectorbt": lambda o=o, c=c, pairs=pairs: vectorbt_run(o, c, pairs),
        }
        results = {name: best(args.repeat, fn) for name, fn in runs.items()}
        compare(label, {k: v[0] for k, v in results.items()},
                {k: v[1] for k, v in results.items()})
    weights = portfolio_weights(bars)
    seconds, _ = best(args.repeat, lambda: run_vectorized(bars, weights, capital=1e6,
                                                          costs=Costs()))
    print(f"\nrun_vectorized, one {n}-symbol book (1/N each when long): {seconds * 1e3:.0f} ms")
    measure_memory(bars)


if __name__ == "__main__":
    main()
