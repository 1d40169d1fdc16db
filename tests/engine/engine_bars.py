"""Helpers for the engine tests: tiny bar frames written out by hand."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

T0 = dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC)


def minute(i: int, day: int = 0) -> dt.datetime:
    """The ``i``-th one-minute bar of trading day ``day`` (days are calendar days here)."""
    return T0 + dt.timedelta(days=day, minutes=i)


def make_bars(prices: dict[str, list[tuple[float, float] | None]]) -> pl.DataFrame:
    """Bars from ``{symbol: [(open, close) or None for a missing bar, ...]}``, one per minute."""
    rows = []
    for symbol in sorted(prices):
        for i, oc in enumerate(prices[symbol]):
            if oc is None:
                continue
            o, c = oc
            rows.append({"ts": minute(i), "symbol": symbol, "open": o, "high": max(o, c),
                         "low": min(o, c), "close": c, "volume": 100})
    return pl.DataFrame(
        rows,
        schema={"ts": pl.Datetime("us", "UTC"), "symbol": pl.String, "open": pl.Float64,
                "high": pl.Float64, "low": pl.Float64, "close": pl.Float64,
                "volume": pl.Int64},
    )


def make_weights(rows: list[tuple[int, str, float]]) -> pl.DataFrame:
    """Weights from ``[(bar index, symbol, weight), ...]``."""
    return pl.DataFrame(
        {"ts": [minute(i) for i, _, _ in rows], "symbol": [s for _, s, _ in rows],
         "weight": [w for _, _, w in rows]},
        schema={"ts": pl.Datetime("us", "UTC"), "symbol": pl.String, "weight": pl.Float64},
    )


def random_walk_bars(symbols: list[str], n: int, *, start: dt.datetime, seed: int,
                     base: float, sigma: float) -> pl.DataFrame:
    """Random-walk minute bars, sorted by (symbol, ts): symbol ``i`` starts near
    ``base·(1+i)`` with log-returns of std ``sigma``; each open is the previous close."""
    rng = np.random.default_rng(seed)
    frames = []
    for i, symbol in enumerate(symbols):
        close = base * (1 + i) * np.exp(np.cumsum(rng.normal(0, sigma, n)))
        open_ = np.concatenate(([close[0]], close[:-1]))
        frames.append(pl.DataFrame({
            "ts": [start + dt.timedelta(minutes=k) for k in range(n)], "symbol": [symbol] * n,
            "open": open_, "high": np.maximum(open_, close), "low": np.minimum(open_, close),
            "close": close, "volume": np.full(n, 1000, dtype=np.int64),
        }))
    return pl.concat(frames).with_columns(pl.col("ts").cast(pl.Datetime("us", "UTC")))


def three_symbol_case(seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Three symbols × 30 bars of random walk, one with a missing bar and one starting
    late, and random weights every other bar: a small case the engine's paths must agree
    on (tests of costs, thresholds and the fill model)."""
    rng = np.random.default_rng(seed)
    prices: dict[str, list[tuple[float, float] | None]] = {}
    for s in ("A", "B", "C"):
        close = 10 * np.exp(np.cumsum(rng.normal(0, 0.02, 30)))
        opens = close * np.exp(rng.normal(0, 0.01, 30))
        prices[s] = [(float(o), float(c)) for o, c in zip(opens, close, strict=True)]
    prices["B"][7] = None  # a missing bar
    prices["C"][:3] = [None] * 3  # a late start
    rows = [(i, s, float(rng.uniform(-1, 1))) for i in range(0, 30, 2) for s in ("A", "B", "C")
            if prices[s][i] is not None]
    return make_bars(prices), make_weights(rows)
