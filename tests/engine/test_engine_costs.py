"""Costs, borrow, leverage limits and the rebalance threshold, each against hand arithmetic."""

from __future__ import annotations

import polars as pl
import pytest
from engine_bars import make_bars, make_weights, minute, three_symbol_case

from pitwall.engine import run_vectorized
from pitwall.errors import StrategyOutputError
from pitwall.models import Costs, Execution

TOL = 1e-12


def _equity(result: object) -> list[float]:
    return result.equity.get_column("equity").to_list()  # type: ignore[attr-defined, no-any-return]


def test_commission_per_share_is_a_rate_per_price_by_hand() -> None:
    bars = make_bars({"A": [(10, 10), (10, 10), (10, 10)], "B": [(50, 50), (50, 50), (50, 50)]})
    weights = make_weights([(0, "A", 0.5), (0, "B", 0.5)])
    result = run_vectorized(bars, weights, capital=1000.0,
                            costs=Costs(commission_per_share=0.01))
    # 1 cent a share is 0.001 of A's notional (price 10) and 0.0002 of B's (price 50):
    # k = 1 − (.001·.5k + .0002·.5k) → k = 1/1.0006.
    k = 1 / 1.0006
    assert _equity(result) == pytest.approx([1000, 1000 * k, 1000 * k], rel=TOL)
    trades = result.trades()
    assert trades.get_column("symbol").to_list() == ["A", "B"]
    assert trades.get_column("ts").to_list() == [minute(1), minute(1)]
    assert trades.get_column("qty").to_list() == pytest.approx([500 * k / 10, 500 * k / 50],
                                                               rel=TOL)
    assert trades.get_column("price").to_list() == [10.0, 50.0]
    # The cost of each trade is 1 cent per share traded.
    assert trades.get_column("cost").to_list() == pytest.approx(
        [0.01 * 50 * k, 0.01 * 10 * k], rel=TOL)
    assert result.total_cost == pytest.approx(1000 * (1 - k), rel=TOL)


def test_fixed_spread_costs_half_the_spread() -> None:
    bars = make_bars({"A": [(10, 10), (10, 11), (11, 12)]})
    weights = make_weights([(0, "A", 1.0), (1, "A", 0.0)])
    spread = run_vectorized(bars, weights, capital=100.0, costs=Costs(spread_bps=20))
    commission = run_vectorized(bars, weights, capital=100.0, costs=Costs(commission_bps=10))
    assert _equity(spread) == pytest.approx(_equity(commission), rel=TOL)
    # By hand: buy at bar 1 paying .001: k = 1/1.001; A +10% in bar 1; sell all at bar 2.
    k = 1 / 1.001
    assert _equity(spread) == pytest.approx([100, 110 * k, 110 * k * 0.999], rel=TOL)


def test_range_spread_uses_the_fill_bars_high_and_low() -> None:
    bars = make_bars({"A": [(10, 10), (10, 10), (10, 10)]}).with_columns(
        high=pl.Series([10.0, 11.0, 10.0]), low=pl.Series([10.0, 9.0, 10.0]))
    weights = make_weights([(0, "A", 1.0)])
    result = run_vectorized(bars, weights, capital=100.0, costs=Costs(spread_model="range"))
    # Bar 1's range is 2 on an open of 10: half-spread .1 of notional → k = 1/1.1.
    assert _equity(result) == pytest.approx([100, 100 / 1.1, 100 / 1.1], rel=TOL)


def test_borrow_accrues_on_short_notional_over_time_by_hand() -> None:
    bars = make_bars({"A": [(10, 10)] * 4})
    weights = make_weights([(0, "A", -1.0)])
    result = run_vectorized(bars, weights, capital=1000.0, costs=Costs(borrow_bps=10_000))
    # 100% a year on the short notional, per minute held (ACT/365), paid at the next open.
    b = 60 / (365 * 86_400)
    assert _equity(result) == pytest.approx(
        [1000, 1000, 1000 * (1 - b), 1000 * (1 - b) ** 2], rel=TOL)
    longs = run_vectorized(bars, make_weights([(0, "A", 1.0)]), capital=1000.0,
                           costs=Costs(borrow_bps=10_000))
    assert _equity(longs) == [1000.0] * 4  # a long pays no borrow


def test_gross_leverage_is_clipped_keeping_relative_weights() -> None:
    bars = make_bars({"A": [(10, 10), (10, 11), (11, 11)], "B": [(10, 10), (10, 9), (9, 9)]})
    asked = make_weights([(0, "A", 1.5), (0, "B", 1.0)])
    clipped = run_vectorized(bars, asked, capital=100.0, costs=Costs(),
                             execution=Execution(max_gross=2.0))
    scaled = run_vectorized(bars, make_weights([(0, "A", 1.2), (0, "B", 0.8)]), capital=100.0,
                            costs=Costs())
    assert _equity(clipped) == pytest.approx(_equity(scaled), rel=TOL)
    # Bar 1 close: 100 + 120·.1 − 80·.1 = 104.
    assert _equity(clipped)[1] == pytest.approx(104.0, rel=TOL)
    # Targets of bars 0 and 1 (forward-filled) were over the limit; bar 2's is never traded.
    assert clipped.leverage_clipped_bars == 2
    assert scaled.leverage_clipped_bars == 0


def test_net_leverage_is_clipped() -> None:
    bars = make_bars({"A": [(10, 10), (10, 12)], "B": [(10, 10), (10, 10)]})
    result = run_vectorized(bars, make_weights([(0, "A", 1.0), (0, "B", 0.5)]), capital=100.0,
                            costs=Costs(), execution=Execution(max_net=1.0))
    # Net 1.5 → scaled by 2/3: A 2/3 of equity earns 20%.
    assert _equity(result) == pytest.approx([100, 100 * (1 + 0.2 * 2 / 3)], rel=TOL)
    assert result.leverage_clipped_bars == 1


def test_leverage_refused_names_the_first_bar() -> None:
    bars = make_bars({"A": [(10, 10)] * 3, "B": [(10, 10)] * 3})
    weights = make_weights([(0, "A", 0.5), (1, "A", 1.0), (1, "B", -1.5)])
    with pytest.raises(StrategyOutputError, match=r"2024-01-02 14:31:00\+00:00 have gross "
                       r"leverage 2\.5, over max_gross=2.*leverage_policy='clip'"):
        run_vectorized(bars, weights, capital=1.0, costs=Costs(),
                       execution=Execution(max_gross=2.0, leverage_policy="refuse"))


def test_rebalance_threshold_skips_small_drift_by_hand() -> None:
    bars = make_bars({"A": [(10, 10), (10, 10.5), (10.5, 14), (14, 14)]})
    weights = make_weights([(0, "A", 0.5)])
    result = run_vectorized(bars, weights, capital=1000.0, costs=Costs(),
                            execution=Execution(rebalance_threshold=0.05))
    # Bar 1: buy 500 (50 shares); close 10.5: equity 1025.
    # Bar 2 open: A is 525/1025 = .512 of equity, .012 from .5 < .05: no trade; close 14: 1200.
    # Bar 3 open: A is 700/1200 = .583, .083 ≥ .05: sell 100 back to .5.
    assert _equity(result) == pytest.approx([1000, 1025, 1200, 1200], rel=TOL)
    assert result.equity.get_column("turnover").to_list() == pytest.approx(
        [0, 0.5, 0, 100 / 1200], rel=TOL)
    trades = result.trades()
    assert trades.get_column("notional").to_list() == pytest.approx([500.0, -100.0], rel=TOL)
    assert trades.get_column("qty").to_list() == pytest.approx([50.0, -100 / 14], rel=TOL)
    assert result.n_trades == 2
    positions = result.positions()
    assert positions.get_column("qty").to_list() == pytest.approx([50, 50, 600 / 14], rel=TOL)
    assert positions.get_column("value").to_list() == pytest.approx([525, 700, 600], rel=TOL)


@pytest.mark.parametrize("seed", [1, 2])
def test_the_threshold_loop_at_zero_threshold_is_the_vectorized_engine(seed: int) -> None:
    bars, weights = three_symbol_case(seed)
    costs = Costs(commission_bps=5, commission_per_share=0.01, spread_bps=4, borrow_bps=300)
    fast = run_vectorized(bars, weights, capital=1e4, costs=costs,
                          execution=Execution(max_gross=1.5))
    loop = run_vectorized(bars, weights, capital=1e4, costs=costs,
                          execution=Execution(max_gross=1.5, rebalance_threshold=1e-300))
    for column in ("equity", "turnover", "cost", "gross_exposure", "net_exposure"):
        assert loop.equity.get_column(column).to_numpy() == pytest.approx(
            fast.equity.get_column(column).to_numpy(), rel=1e-9, abs=1e-12)
    assert loop.n_trades == fast.n_trades
    a, b = fast.trades(), loop.trades()
    assert a.select("ts", "symbol").equals(b.select("ts", "symbol"))
    assert a.get_column("cost").to_numpy() == pytest.approx(b.get_column("cost").to_numpy(),
                                                            rel=1e-9)
    assert float(a.get_column("cost").sum()) == pytest.approx(fast.total_cost, rel=1e-9)


def test_trades_and_positions_reconcile_with_equity() -> None:
    bars, weights = three_symbol_case(3)
    result = run_vectorized(bars, weights, capital=1e4, costs=Costs(commission_bps=10))
    positions = result.positions()
    value = positions.group_by("ts").agg(pl.col("value").sum(), pl.col("weight").sum())
    # Σ position weights at a close = the net exposure at that close.
    joined = result.equity.join(value, on="ts")
    assert joined.get_column("weight").to_numpy() == pytest.approx(
        joined.get_column("net_exposure").to_numpy(), rel=1e-9)
    trades = result.trades()
    per_bar = trades.group_by("ts").agg(pl.col("cost").sum())
    joined = result.equity.join(per_bar, on="ts", suffix="_trades")
    assert joined.get_column("cost_trades").to_numpy() == pytest.approx(
        joined.get_column("cost").to_numpy(), rel=1e-9)
    assert trades.height == result.n_trades
