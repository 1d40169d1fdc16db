"""The compiled metric passes (day ends, drawdown of the marked curve) give the numbers of
the NumPy formulas they replace, bit for bit, whatever the order or sign of the inputs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pitwall.engine import metrics
from pitwall.engine.vectorized import EngineResult

DAY = 86_400_000_000


def _result(ts: np.ndarray, equity: np.ndarray, capital: float) -> EngineResult:
    frame = pl.DataFrame({
        "ts": pl.Series("ts", ts, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        "equity": equity,
    })
    return EngineResult(equity=frame, capital=capital, n_trades=0, total_cost=0.0)


def _numpy_day_ends(ts: np.ndarray) -> np.ndarray:
    day = ts // DAY
    return np.flatnonzero(np.concatenate((day[1:] != day[:-1], [True])))


def _numpy_drawdown(equity: np.ndarray, capital: float) -> float:
    peak = np.maximum(np.maximum.accumulate(equity), capital)
    with np.errstate(divide="ignore", invalid="ignore"):
        drawdown = np.where(peak > 0, equity / peak - 1.0, -1.0)
    return metrics._finite(min(float(drawdown.min()), 0.0))


@pytest.mark.parametrize("seed", range(4))
def test_day_ends_equal_the_floor_division(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sorted_ts = np.cumsum(rng.integers(1, DAY // 3, 500)) - 40 * DAY  # across 1970
    shuffled = rng.permutation(sorted_ts)
    for ts in (sorted_ts, shuffled, sorted_ts[:1], np.array([-1, 0, DAY - 1, DAY, -DAY])):
        ends = metrics._day_ends(_result(ts, np.ones(len(ts)), 1.0))
        np.testing.assert_array_equal(ends, _numpy_day_ends(ts))


@pytest.mark.parametrize("seed", range(4))
def test_drawdown_equals_the_numpy_formula(seed: int) -> None:
    rng = np.random.default_rng(seed)
    walk = 1e6 * np.exp(np.cumsum(rng.normal(0, 0.01, 3000)))
    ruined = walk.copy()
    ruined[2000:] = 0.0
    with_nan = walk.copy()
    with_nan[1500] = np.nan
    with_inf = walk.copy()
    with_inf[1700] = np.inf
    with_minus_inf = walk.copy()
    with_minus_inf[1800] = -np.inf
    ts = np.arange(len(walk), dtype=np.int64) * 60_000_000
    for equity in (walk, ruined, with_nan, with_inf, with_minus_inf, walk[:1],
                   np.full(10, 1e6)):
        for capital in (1e6, 2e6, 0.0, -1.0):
            got = metrics.bar_drawdown(_result(ts[: len(equity)], equity, capital))
            assert got == _numpy_drawdown(equity, capital)
