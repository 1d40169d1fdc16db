"""The vectorized engine against hand arithmetic and against a slow bar-by-bar reference."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from engine_bars import make_bars, make_weights, minute

from pitwall.engine import run_vectorized, validate_weights
from pitwall.errors import StrategyOutputError
from pitwall.models import Costs

TOL = 1e-12


def test_two_symbols_four_bars_with_costs_by_hand() -> None:
    bars = make_bars({
        "A": [(10, 10), (10, 11), (12, 12), (12, 15)],
        "B": [(20, 20), (20, 20), (20, 19), (18, 18)],
    })
    weights = make_weights([
        (0, "A", 0.5), (0, "B", 0.5),   # traded at the open of bar 1
        (1, "A", 1.0), (1, "B", 0.0),   # traded at the open of bar 2
        (2, "A", 0.5), (2, "B", -0.5),  # traded at the open of bar 3
        (3, "A", 0.0),                  # the last bar's target is never traded
    ])
    c = 0.001  # 5 bps commission + 5 bps slippage
    result = run_vectorized(bars, weights, capital=1000.0,
                            costs=Costs(commission_bps=5, slippage_bps=5))
    eq = result.equity

    # Bar 0: nothing decided yet, all cash.
    e0 = 1000.0
    # Bar 1 open: from cash (d = 0) to a = (.5, .5) of post-cost equity k·E:
    #   k = 1 − c·(.5k + .5k) → k = 1/(1+c); turnover Σ|a·k − d| = k.
    k1 = 1 / (1 + c)
    p1 = 1000.0 * k1
    #   close: A 10→11 (+10%), B flat: E = P·(.5·1.1 + .5·1.0)
    e1 = p1 * 1.05
    # Bar 2 open: A gapped 11→12, B flat: positions .5P·1.2 and .5P, E_open = 1.1P.
    #   d = (.6/1.1, .5/1.1) = (6/11, 5/11); target (1, 0):
    #   k = 1 − c·((k − 6/11) + 5/11) → k = (1 + c/11)/(1 + c).
    pre2 = 1.1 * p1
    k2 = (1 + c / 11) / (1 + c)
    p2 = pre2 * k2
    e2 = p2  # A 12→12, nothing else held
    # Bar 3 open: A flat 12→12 so d = (1, 0); target (.5, −.5):
    #   k = 1 − c·((1 − .5k) + .5k) = 1 − c; turnover = 1.
    pre3 = p2
    k3 = 1 - c
    p3 = pre3 * k3
    #   close: A 12→15 (+25%), B 18→18: E = P·(1 + .5·.25)
    e3 = p3 * 1.125

    assert eq.get_column("equity").to_list() == pytest.approx([e0, e1, e2, e3], rel=TOL)
    assert eq.get_column("turnover").to_list() == pytest.approx(
        [0.0, k1, k2 - 1 / 11, 1.0], rel=TOL)
    costs = [0.0, 1000.0 * (1 - k1), pre2 * (1 - k2), pre3 * c]
    assert eq.get_column("cost").to_list() == pytest.approx(costs, rel=TOL)
    assert result.total_cost == pytest.approx(sum(costs), rel=TOL)
    # Close of bar 3: A worth .625P, B worth −.5P, equity 1.125P.
    assert eq.get_column("gross_exposure").to_list() == pytest.approx(
        [0.0, 1.0, 1.0, 1.125 / 1.125], rel=TOL)
    assert eq.get_column("net_exposure").to_list() == pytest.approx(
        [0.0, 1.0, 1.0, 0.125 / 1.125], rel=TOL)
    assert result.n_trades == 6  # two symbols rebalanced at bars 1, 2 and 3
    assert eq.get_column("ts").to_list() == [minute(i) for i in range(4)]
    assert result.final_equity == pytest.approx(e3, rel=TOL)


def test_a_weight_does_not_earn_its_own_bar_or_the_gap_after_it() -> None:
    # Bar 0 doubles intrabar and bar 1 gaps up 50%: a weight set at bar 0 earns neither.
    bars = make_bars({"A": [(10, 20), (30, 33), (33, 33)]})
    result = run_vectorized(bars, make_weights([(0, "A", 1.0)]), capital=100.0, costs=Costs())
    assert result.equity.get_column("equity").to_list() == pytest.approx([100.0, 110.0, 110.0])


def test_a_weight_on_the_last_bar_is_not_executed() -> None:
    bars = make_bars({"A": [(10, 10), (10, 20)]})
    result = run_vectorized(bars, make_weights([(1, "A", 1.0)]), capital=100.0,
                            costs=Costs(commission_bps=10))
    assert result.equity.get_column("equity").to_list() == [100.0, 100.0]
    assert result.n_trades == 0
    assert result.total_cost == 0.0


def test_a_missing_bar_keeps_the_position_at_the_last_close_by_hand() -> None:
    bars = make_bars({
        "A": [(10, 10), (10, 10), (10, 10), (10, 10)],
        "B": [(20, 20), (20, 22), None, (30, 30)],  # no bar 2
    })
    weights = make_weights([(0, "A", 0.5), (0, "B", 0.5), (1, "A", 0.5), (1, "B", 0.0)])
    result = run_vectorized(bars, weights, capital=100.0, costs=Costs())
    eq = result.equity
    # Bar 1: A 50, B 50 → B closes +10% at 55: equity 105.
    # Bar 2: B has no bar: it stays 55 (price carried at 22), untraded although its target
    #   is 0; A is rebalanced to .5·105 = 52.5, borrowing 2.5 cash (turnover 2.5/105).
    #   Equity 52.5 + 55 − 2.5 = 105; gross exposure (52.5 + 55)/105.
    # Bar 3: B reopens at 30: 55·30/22 = 75; equity 52.5 + 75 − 2.5 = 125; B is sold (75),
    #   A bought to .5·125 = 62.5 (10). Prices are flat within bar 3.
    assert eq.get_column("equity").to_list() == pytest.approx([100, 105, 105, 125], rel=TOL)
    assert eq.get_column("turnover").to_list() == pytest.approx(
        [0, 1, 2.5 / 105, (75 + 10) / 125], rel=TOL)
    assert eq.get_column("gross_exposure").to_list() == pytest.approx(
        [0, 1, 107.5 / 105, 0.5], rel=TOL)
    assert result.n_trades == 2 + 1 + 2


def _reference(
    bars: pl.DataFrame, weights: pl.DataFrame, capital: float, rate: float
) -> list[float]:
    """A slow, obvious bar-by-bar simulation in dollars, solving the cost by bisection."""
    ts = bars.get_column("ts").unique().sort().to_list()
    symbols = bars.get_column("symbol").unique().sort().to_list()
    bar = {(r["ts"], r["symbol"]): (r["open"], r["close"]) for r in bars.iter_rows(named=True)}
    given = {(r["ts"], r["symbol"]): r["weight"] for r in weights.iter_rows(named=True)}
    target = dict.fromkeys(symbols, 0.0)
    last_close: dict[str, float] = {}
    pos = dict.fromkeys(symbols, 0.0)
    cash, marks = capital, []
    for t, now in enumerate(ts):
        for s in symbols:  # to the open: a missing bar's price is the last close
            if (now, s) in bar and s in last_close:
                pos[s] *= bar[now, s][0] / last_close[s]
        equity = cash + sum(pos.values())
        if t > 0:
            live = [s for s in symbols if (now, s) in bar]

            def excess(k: float, equity: float = equity, live: list[str] = live) -> float:
                return equity - rate * sum(abs(target[s] * k - pos[s]) for s in live) - k

            lo, hi = 0.0, equity
            for _ in range(200):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
            post = (lo + hi) / 2
            for s in live:
                pos[s] = target[s] * post
            cash = post - sum(pos.values())
        for s in symbols:
            if (now, s) in bar:
                pos[s] *= bar[now, s][1] / bar[now, s][0]
                last_close[s] = bar[now, s][1]
            if (now, s) in given:
                target[s] = given[now, s]
        marks.append(cash + sum(pos.values()))
    return marks


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_vectorized_engine_matches_a_bar_by_bar_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_bars, symbols = 60, ["A", "B", "C", "D"]
    prices: dict[str, list[tuple[float, float] | None]] = {}
    for s in symbols:
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, n_bars)))
        opens = close * np.exp(rng.normal(0, 0.01, n_bars))
        rows: list[tuple[float, float] | None] = [
            (float(o), float(c)) for o, c in zip(opens, close, strict=True)
        ]
        for i in rng.choice(np.arange(1, n_bars), size=6, replace=False):
            rows[i] = None  # missing bars, some while a position is held
        prices[s] = rows
    prices["D"][:5] = [None] * 5  # D starts trading late
    bars = make_bars(prices)
    keys = bars.select("ts", "symbol").sample(fraction=0.5, seed=seed).sort("symbol", "ts")
    weights = keys.with_columns(weight=pl.Series(rng.normal(0.2, 0.5, keys.height)))
    weights = validate_weights(weights, bars, symbols)
    result = run_vectorized(bars, weights, capital=1e6,
                            costs=Costs(commission_bps=20, slippage_bps=30))
    expected = _reference(bars, weights, 1e6, 0.005)
    assert result.equity.get_column("equity").to_list() == pytest.approx(expected, rel=1e-9)


def test_engine_rejects_weights_that_are_not_on_a_bar() -> None:
    bars = make_bars({"A": [(10, 10), (10, 10)]})
    bad = make_weights([(5, "A", 1.0)])
    with pytest.raises(StrategyOutputError, match="not on a bar"):
        run_vectorized(bars, bad, capital=1.0, costs=Costs())


def test_zero_cost_rebalancing_keeps_equity_and_counts_no_trades_without_weights() -> None:
    bars = make_bars({"A": [(10, 11), (12, 13)], "B": [(5, 5), (6, 6)]})
    result = run_vectorized(bars, make_weights([]), capital=7.0, costs=Costs(commission_bps=9))
    assert result.equity.get_column("equity").to_list() == [7.0, 7.0]
    assert result.n_trades == 0


def test_a_wipe_out_ends_the_game_at_zero() -> None:
    # 5× long into a 30% drop: equity would go negative; it is floored at 0 from then on.
    bars = make_bars({"A": [(10, 10), (10, 10), (10, 7), (7, 14)]})
    result = run_vectorized(bars, make_weights([(0, "A", 5.0)]), capital=100.0,
                            costs=Costs(commission_bps=1))
    assert result.equity.get_column("equity").to_list()[2:] == [0.0, 0.0]
    assert result.equity.get_column("gross_exposure").to_list()[2:] == [0.0, 0.0]
    assert result.equity.get_column("equity")[1] > 0
