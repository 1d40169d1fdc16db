"""Metrics: hand-computed values on tiny series, agreement with empyrical, degenerate cases."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest

from pitwall.engine import EngineResult, compute_metrics, daily_returns
from pitwall.engine import metrics as m

R = np.array([0.01, -0.02, 0.03])


def test_pure_metrics_by_hand() -> None:
    # wealth 1 → 1.01 → 0.9898 → 1.019494
    assert m.total_return(R) == pytest.approx(1.01 * 0.98 * 1.03 - 1, abs=1e-15)
    assert m.cagr(R) == pytest.approx(1.019494 ** (252 / 3) - 1, rel=1e-12)
    mean = 0.02 / 3
    std = math.sqrt(((0.01 - mean) ** 2 + (-0.02 - mean) ** 2 + (0.03 - mean) ** 2) / 2)
    assert m.annual_volatility(R) == pytest.approx(std * math.sqrt(252), rel=1e-12)
    assert m.sharpe(R) == pytest.approx(mean / std * math.sqrt(252), rel=1e-12)
    # risk-free is per day: 0.001 off every return moves the mean, not the deviation
    assert m.sharpe(R, risk_free=0.001) == pytest.approx(
        (mean - 0.001) / std * math.sqrt(252), rel=1e-12)
    downside = math.sqrt(0.02**2 / 3) * math.sqrt(252)  # only −2% is below 0
    assert m.downside_risk(R) == pytest.approx(downside, rel=1e-12)
    assert m.sortino(R) == pytest.approx(mean * 252 / downside, rel=1e-12)
    assert m.max_drawdown(R) == pytest.approx(0.9898 / 1.01 - 1, rel=1e-12)  # = −2%
    assert m.max_drawdown(np.array([-0.1, 0.05])) == pytest.approx(-0.1)  # start is a peak


def test_degenerate_series_give_documented_finite_values() -> None:
    one = np.array([0.05])
    assert m.sharpe(one) == 0.0
    assert m.annual_volatility(one) == 0.0
    assert m.sortino(one) == 0.0
    assert m.cagr(one) == pytest.approx(1.05**252 - 1)
    flat = np.full(10, 0.001)
    assert m.sharpe(flat) == 0.0  # zero dispersion
    assert m.sortino(flat) == 0.0  # no downside
    assert m.max_drawdown(flat) == 0.0
    assert m.cagr(np.array([-1.0, 0.0])) == -1.0  # wiped out
    assert m.cagr(np.array([10.0])) == pytest.approx(11.0**252 - 1)
    assert m.cagr(np.array([1e6])) == np.finfo(np.float64).max  # overflow is capped
    empty = np.array([])
    assert [m.total_return(empty), m.cagr(empty), m.max_drawdown(empty)] == [0.0, 0.0, 0.0]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_metrics_agree_with_empyrical() -> None:
    import empyrical

    rng = np.random.default_rng(42)
    r = rng.normal(0.0005, 0.012, 750)
    assert m.sharpe(r) == pytest.approx(empyrical.sharpe_ratio(r), abs=1e-9)
    assert m.sharpe(r, risk_free=2e-4) == pytest.approx(
        empyrical.sharpe_ratio(r, risk_free=2e-4), abs=1e-9)
    assert m.sortino(r) == pytest.approx(empyrical.sortino_ratio(r), abs=1e-9)
    assert m.downside_risk(r) == pytest.approx(empyrical.downside_risk(r), abs=1e-9)
    assert m.annual_volatility(r) == pytest.approx(empyrical.annual_volatility(r), abs=1e-9)
    assert m.max_drawdown(r) == pytest.approx(empyrical.max_drawdown(r), abs=1e-9)
    assert m.cagr(r) == pytest.approx(empyrical.cagr(r), abs=1e-9)
    assert m.total_return(r) == pytest.approx(empyrical.cum_returns_final(r), abs=1e-9)
    assert m.max_drawdown(r) < -0.05  # the series has a real drawdown to compare


def _result(rows: list[tuple[dt.datetime, float, float, float]], capital: float) -> EngineResult:
    frame = pl.DataFrame(
        {"ts": [r[0] for r in rows], "equity": [r[1] for r in rows],
         "gross_exposure": [r[2] for r in rows], "net_exposure": [r[2] for r in rows],
         "turnover": [r[3] for r in rows], "cost": [0.0] * len(rows)},
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )
    return EngineResult(equity=frame, capital=capital, n_trades=0, total_cost=0.0)


def test_compute_metrics_daily_conventions_by_hand() -> None:
    day = dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC)
    later = dt.timedelta(hours=6)  # still the same UTC date
    result = _result(
        [
            (day, 100.0, 0.0, 0.0),
            (day + later, 110.0, 1.0, 1.0),               # day 1 ends at 110
            (day + dt.timedelta(days=1), 99.0, 2.0, 0.5),
            (day + dt.timedelta(days=1) + later, 121.0, 1.0, 0.25),  # day 2 ends at 121
        ],
        capital=100.0,
    )
    returns = daily_returns(result)
    assert returns.tolist() == pytest.approx([0.10, 0.10])  # first day against the capital
    metrics = compute_metrics(result)
    assert metrics.total_return == pytest.approx(0.21)
    assert metrics.final_equity == 121.0
    assert metrics.n_days == 2
    assert metrics.n_bars == 4
    assert metrics.turnover == pytest.approx((1.0 + 0.75) / 2 * 252)  # per-day sums, mean, ×252
    assert metrics.exposure == pytest.approx((0 + 1 + 2 + 1) / 4)  # mean gross over bars
    assert metrics.sharpe == 0.0  # two equal daily returns: zero dispersion
    # The drawdown is of the equity at every close (the curve a report plots): the 99
    # after 110 is a fall of 10%, though no day *ended* below the previous one.
    assert metrics.max_drawdown == pytest.approx(99 / 110 - 1, rel=1e-12)
    assert metrics.calmar == pytest.approx(metrics.cagr / 0.1, rel=1e-12)
    assert metrics.max_drawdown_days == 0  # counted in days: none closed under a peak
    json.dumps(metrics.model_dump(), allow_nan=False)


def test_wipe_out_gives_finite_metrics() -> None:
    day = dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC)
    result = _result([(day, 0.0, 0.0, 0.0), (day + dt.timedelta(days=1), 0.0, 0.0, 0.0)], 100.0)
    metrics = compute_metrics(result)
    assert metrics.total_return == -1.0
    assert metrics.cagr == -1.0
    assert metrics.max_drawdown == -1.0
    json.dumps(metrics.model_dump(), allow_nan=False)
