"""The official vectorized path: the compiled recursion against the NumPy passes, and the
metrics a report shows beside its chart (drawdown of the plotted curve, JSON-safe ratios)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
from engine_bars import make_bars, make_weights, random_walk_bars

from pitwall.engine import charts, compute_metrics, fills, run_vectorized, validate_weights
from pitwall.engine import grid as grid_module
from pitwall.engine.charges import borrow_fraction, cost_rate
from pitwall.engine.grid import build_grid, target_grid
from pitwall.errors import DataError, StrategyOutputError
from pitwall.models import Costs, Metrics

START = dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC)
FIELDS = ("pre", "post", "close", "turnover", "gross", "net", "fee")


def _ragged_bars() -> pl.DataFrame:
    """Three symbols, one missing bars in the middle (a frozen position), one starting late."""
    bars = random_walk_bars(["A", "B", "C"], 400, start=START, seed=3, base=50.0, sigma=0.01)
    minute = pl.col("ts").dt.minute()
    return bars.filter(
        ~((pl.col("symbol") == "B") & (minute % 7 == 3))
        & ~((pl.col("symbol") == "C") & (pl.col("ts") < START + dt.timedelta(minutes=40)))
    )


@pytest.mark.parametrize(
    ("ragged", "costs"),
    [
        (False, Costs(commission_bps=3, slippage_bps=2, borrow_bps=300)),
        (True, Costs(commission_per_share=0.01, spread_model="range", borrow_bps=100)),
        (True, Costs()),
    ],
)
def test_compiled_pass_equals_numpy_passes(ragged: bool, costs: Costs) -> None:
    bars = _ragged_bars() if ragged else random_walk_bars(
        ["A", "B", "C"], 400, start=START, seed=4, base=50.0, sigma=0.01)
    rng = np.random.default_rng(5)
    # Longs and shorts, levered, changing every bar: every branch of the cost solve.
    weights = bars.select("ts", "symbol", weight=pl.Series(rng.uniform(-0.8, 1.2, bars.height)))
    grid = build_grid(bars)
    assert (grid.cells is not None) == ragged
    target = target_grid(grid, bars, weights)
    rate, borrow = cost_rate(grid, bars, costs), borrow_fraction(grid, costs)
    numpy_path = fills.simulate_numpy(grid, target, rate=rate, borrow=borrow)
    compiled = fills.simulate_compiled(grid, target, rate=rate, borrow=borrow)
    assert fills.compiled_path()  # numba is a runtime dependency: jobs take this path
    for name in FIELDS:
        np.testing.assert_allclose(getattr(compiled, name), getattr(numpy_path, name),
                                   rtol=1e-10, atol=1e-13, err_msg=name)
    assert compiled.n_trades == numpy_path.n_trades > 0
    np.testing.assert_allclose(compiled.held, numpy_path.held, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(compiled.book_gap, numpy_path.book_gap, rtol=1e-9, atol=1e-13)


def test_compiled_pass_ruin_and_bad_prices() -> None:
    # 3x long into a 50% fall: equity goes negative at the close, then stays 0.
    bars = make_bars({"A": [(10.0, 10.0), (10.0, 5.0), (5.0, 6.0), (6.0, 6.0)]})
    weights = make_weights([(0, "A", 3.0), (1, "A", 3.0), (2, "A", 3.0)])
    result = run_vectorized(bars, weights, capital=100.0, costs=Costs(commission_bps=10))
    assert result.equity.get_column("equity").to_list()[1:] == [0.0, 0.0, 0.0]
    broken = bars.with_columns(close=pl.when(pl.col("ts") == bars["ts"][2]).then(0.0)
                               .otherwise(pl.col("close")))
    with pytest.raises(DataError, match="non-positive or non-finite price"):
        run_vectorized(broken, weights, capital=100.0, costs=Costs())


def test_max_drawdown_is_the_plotted_curves_and_profit_factor_is_json() -> None:
    # Long one share-worth all along: day 1 dips to 90 intraday and ends at a new high,
    # day 2 too. No *day* ends below the previous one, but the curve falls 10%.
    day1 = [(100.0, 100.0), (100.0, 90.0), (90.0, 105.0)]
    day2 = [(105.0, 95.0), (95.0, 110.0)]
    rows = [(START + dt.timedelta(minutes=i), o, c) for i, (o, c) in enumerate(day1)]
    rows += [(START + dt.timedelta(days=1, minutes=i), o, c) for i, (o, c) in enumerate(day2)]
    bars = pl.DataFrame(
        {"ts": [r[0] for r in rows], "symbol": "A", "open": [r[1] for r in rows],
         "close": [r[2] for r in rows]},
        schema_overrides={"ts": pl.Datetime("us", "UTC")},
    )
    weights = validate_weights(bars.select("ts", "symbol", weight=pl.lit(1.0)), bars, ["A"])
    result = run_vectorized(bars, weights, capital=100.0, costs=Costs())
    metrics = compute_metrics(result)
    # In at the open of bar 1 (100), 90 at its close: a 10% fall from the capital.
    assert metrics.max_drawdown == pytest.approx(-0.10, rel=1e-12)
    plotted = charts.chart_data(result, None).drawdown
    assert metrics.max_drawdown == pytest.approx(min(plotted), rel=1e-12)
    # Both days closed up: gains and no losing day, a profit factor of +inf, stored as null.
    assert metrics.profit_factor is None
    text = metrics.model_dump_json()
    assert json.loads(text)["profit_factor"] is None
    assert Metrics.model_validate_json(text) == metrics
    json.dumps(metrics.model_dump(mode="json"), allow_nan=False)


def test_an_edit_after_validation_is_checked_again() -> None:
    # The engine reuses what validate_weights learnt of the same frames (one weight per
    # bar, in order); a frame edited in place since then is checked from scratch.
    bars = random_walk_bars(["A", "B"], 30, start=START, seed=6, base=20.0, sigma=0.01)
    weights = validate_weights(bars.select("ts", "symbol", weight=pl.lit(0.5)), bars, ["A", "B"])
    before = run_vectorized(bars, weights, capital=100.0, costs=Costs()).final_equity
    assert grid_module._is_aligned(weights, bars)  # the reuse this test is about
    weights[3, "ts"] = START + dt.timedelta(seconds=30)  # between two bars
    assert not grid_module._is_aligned(weights, bars)
    with pytest.raises(StrategyOutputError, match="not on a bar"):
        run_vectorized(bars, weights, capital=100.0, costs=Costs())
    weights[3, "ts"] = bars["ts"][3]
    assert run_vectorized(bars, weights, capital=100.0, costs=Costs()).final_equity == before
