"""The metrics added for the engines issue, against empyrical or by hand."""

from __future__ import annotations

import datetime as dt
import math

import empyrical
import numpy as np
import polars as pl
import pytest
from engine_bars import make_bars, make_weights

from pitwall.engine import compute_metrics, run_vectorized
from pitwall.engine import metrics as m
from pitwall.engine.report import format_metrics
from pitwall.models import BacktestSpec, Costs, Execution

RNG = np.random.default_rng(11)
SERIES = [RNG.normal(0.0005, 0.01, 300), RNG.normal(-0.001, 0.02, 40)]


@pytest.mark.parametrize("returns", SERIES)
def test_calmar_matches_empyrical(returns: np.ndarray) -> None:
    assert m.calmar(returns) == pytest.approx(empyrical.calmar_ratio(returns), rel=1e-9)


@pytest.mark.parametrize("returns", SERIES)
@pytest.mark.parametrize("rf", [0.0, 0.0001])
def test_beta_and_alpha_match_empyrical(returns: np.ndarray, rf: float) -> None:
    bench = 0.6 * returns + RNG.normal(0, 0.005, len(returns))
    e_alpha, e_beta = empyrical.alpha_beta(returns, bench, risk_free=rf)
    assert m.beta(returns, bench) == pytest.approx(e_beta, rel=1e-9)
    assert m.alpha(returns, bench, risk_free=rf) == pytest.approx(e_alpha, rel=1e-9)


def test_degenerate_cases_are_finite() -> None:
    flat = np.zeros(5)
    assert m.calmar(np.array([0.01, 0.02])) == 0.0  # no drawdown: empyrical says NaN
    assert m.beta(np.array([0.01, 0.02]), flat[:2]) == 0.0  # constant benchmark
    assert m.profit_factor(np.array([0.01, 0.0])) == math.inf  # no losing day
    assert m.profit_factor(np.array([-0.01, 0.0])) == 0.0
    assert m.win_rate(flat) == 0.0


def test_drawdown_duration_win_rate_profit_factor_by_hand() -> None:
    r = np.array([0.10, -0.05, -0.05, 0.02, 0.20, -0.01, 0.0, 0.01])
    # Wealth 1.1, 1.045, .99275, 1.0126, 1.2151, 1.2030, 1.2030, 1.2150: under the 1.1 peak
    # for days 2–4 (3 days), under 1.2151 from day 6 to the end (3 days, still open).
    assert m.max_drawdown_days(r) == 3
    assert m.max_drawdown_days(np.array([-0.1, -0.1, 0.5, -0.01])) == 2
    assert m.max_drawdown_days(np.array([0.01, 0.02])) == 0
    assert m.win_rate(r) == pytest.approx(4 / 7)  # the flat day does not count
    assert m.profit_factor(r) == pytest.approx(0.33 / 0.11)


def test_compute_metrics_with_a_benchmark_symbol_and_clipping() -> None:
    days = 6
    closes = {"A": [10, 11, 10.5, 12, 12.5, 12], "M": [100, 101, 99, 103, 104, 102]}
    rows = []
    for s, cs in closes.items():
        for d, c in enumerate(cs):
            for i in range(2):  # two bars a day
                ts = dt.datetime(2024, 1, 2 + d, 14, 30 + i, tzinfo=dt.UTC)
                rows.append({"ts": ts, "symbol": s, "open": float(c), "high": float(c),
                             "low": float(c), "close": float(c) + i * 0.5, "volume": 1})
    bars = pl.DataFrame(rows).sort("symbol", "ts")
    weights = bars.filter(pl.col("symbol") == "A").select("ts", "symbol", weight=pl.lit(3.0))
    spec = BacktestSpec(dataset="d", universe=["A", "M"], start=dt.date(2024, 1, 2),
                        end=dt.date(2024, 1, 7), benchmark="M", risk_free=0.0252,
                        execution=Execution(max_gross=2.0))
    result = run_vectorized(bars, weights, capital=1e4, costs=Costs(), execution=spec.execution)
    metrics = m.metrics_for_spec(result, bars, spec)
    returns = m.daily_returns(result)
    bench = m.benchmark_returns(bars, "M", m.trading_days(result))
    # Buy and hold M from its first open (100): last close of each day.
    last = np.array([100.5, 101.5, 99.5, 103.5, 104.5, 102.5])
    assert bench == pytest.approx(last / np.concatenate(([100.0], last[:-1])) - 1, rel=1e-12)
    e_alpha, e_beta = empyrical.alpha_beta(returns, bench, risk_free=0.0001)
    assert metrics.beta == pytest.approx(e_beta, rel=1e-9)
    assert metrics.alpha == pytest.approx(e_alpha, rel=1e-9)
    assert metrics.sharpe == pytest.approx(empyrical.sharpe_ratio(returns, risk_free=0.0001),
                                           rel=1e-9)
    assert metrics.leverage_clipped_bars == days * 2 * 1 - 1
    assert metrics.n_trades == result.n_trades > 0
    without = compute_metrics(result)  # no benchmark given: no beta, not a beta of 0
    assert without.beta is None and without.alpha is None
    labels = [label for label, _value in format_metrics(without)]
    assert "Beta" not in labels and "Alpha (annual)" not in labels
    assert ("Beta", f"{metrics.beta:.3f}") in format_metrics(metrics)


def test_a_benchmark_outside_the_universe_is_a_valid_spec() -> None:
    # Its bars are read by the trusted engine only (tests/execution/test_benchmark_job.py).
    spec = BacktestSpec(dataset="d", universe=["A"], start=dt.date(2024, 1, 2),
                        end=dt.date(2024, 1, 3), benchmark="SPY")
    assert spec.benchmark == "SPY" and spec.universe == ["A"]


def test_existing_metrics_constructions_still_work() -> None:
    bars = make_bars({"A": [(10, 10), (10, 11)]})
    result = run_vectorized(bars, make_weights([(0, "A", 1.0)]), capital=1.0, costs=Costs())
    metrics = compute_metrics(result)
    assert metrics.model_dump()["calmar"] == 0.0
    assert metrics.win_rate == 1.0
