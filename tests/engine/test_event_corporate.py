"""Corporate actions in the event engine, against hand arithmetic and against the
vectorized engine on the same bars (docs/reference-data.md §4).

One bar per day at 15:00 UTC (10:00 in New York); capital 1,000; no costs unless said.
An order placed at the close of day 1 fills at the open of day 2.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest
from corporate_kit import CAPITAL, action, corporate, ts

import pitwall
from pitwall.engine import run_vectorized
from pitwall.engine.broker import Broker
from pitwall.models import Costs
from pitwall.notebook.event_quick_run import run_local


def bars(rows: dict[str, list[tuple[int, float, float]]]) -> pl.DataFrame:
    """``{symbol: [(day, open, close), …]}`` as OHLCV bars (high/low around them)."""
    out = [(ts(day), s, o, max(o, c) * 1.001, min(o, c) * 0.999, c, 1e9)
           for s, days in rows.items() for day, o, c in days]
    return pl.DataFrame(out, schema={"ts": pl.Datetime("us", "UTC"), "symbol": pl.String,
                                     "open": pl.Float64, "high": pl.Float64,
                                     "low": pl.Float64, "close": pl.Float64,
                                     "volume": pl.Float64}, orient="row").sort("symbol", "ts")


class Buy(pitwall.Strategy):
    """Orders ``qty`` of ``symbol`` on day 1; records what it sees at every bar."""

    symbol = "A"
    qty = 10.0
    seen: ClassVar[list[dict[str, Any]]] = []

    def on_start(self, ctx: Any) -> None:
        Buy.seen = []

    def on_bar(self, ctx: Any) -> None:
        Buy.seen.append({"symbols": ctx.symbols, "cash": ctx.portfolio.cash,
                         "position": ctx.portfolio.position(self.symbol),
                         "fields": ctx.fields})
        if len(Buy.seen) == 1:
            ctx.order(self.symbol, self.qty)


def equity(result: Any) -> list[float]:
    return [round(x, 9) for x in result.equity["equity"]]


SPLIT_BARS = bars({"A": [(1, 100, 100), (2, 100, 110), (3, 55, 60), (4, 60, 66)]})


@pytest.mark.parametrize(("qty", "expected"), [
    # 10 shares at 100; 20 shares at 60 and 66 after the 2:1 split.
    (10.0, [1000.0, 1100.0, 1200.0, 1320.0]),
    # Short 10 at 100: cash 2000; the split makes it −20 shares: 2000 − 20·60, − 20·66.
    (-10.0, [1000.0, 900.0, 800.0, 680.0]),
])
def test_a_split_multiplies_the_position_and_keeps_its_value(qty: float,
                                                             expected: list[float]) -> None:
    result = run_local(Buy, SPLIT_BARS, {"qty": qty}, capital=CAPITAL,
                       corporate=corporate(action("A", "split", 3, ratio=2.0)))
    assert equity(result) == expected
    assert [s["position"] for s in Buy.seen] == [0.0, qty, 2 * qty, 2 * qty]
    assert result.trades().height == 1  # the split is not a trade
    assert result.corporate is not None and result.corporate.splits == 1
    # Unadjusted bars used as given lose (or, short, gain) half the position at the split.
    naive = run_local(Buy, SPLIT_BARS, {"qty": qty}, capital=CAPITAL)
    assert equity(naive)[2] == 1000 + qty * (55 - 100) + qty * 5


def test_event_and_vectorized_engines_agree_across_a_split_and_a_dividend() -> None:
    data = bars({"A": [(1, 100, 100), (2, 100, 110), (3, 55, 60), (4, 60, 66),
                       (5, 65, 64)]})
    acts = corporate(action("A", "split", 3, ratio=2.0),
                     action("A", "dividend", 5, amount=1.5))
    event = run_local(Buy, data, {"qty": 10.0}, capital=CAPITAL, corporate=acts)
    weights = pl.DataFrame({"ts": [ts(1)], "symbol": ["A"], "weight": [1.0]})
    vector = run_vectorized(data, weights, capital=CAPITAL, costs=Costs(), corporate=acts)
    # Full investment at day 2's open, held: both books own 20 shares after the split
    # and get 20 × 1.50 at day 5's open. The event book keeps the 30 as cash; the
    # vectorized one rebalances its 1,330 to 100 % at that open (constant mix,
    # docs/engine-conventions.md), so it holds 1330/65 shares at the close.
    assert equity(event)[:4] == equity(vector)[:4] == [1000.0, 1100.0, 1200.0, 1320.0]
    assert equity(event)[4] == 20 * 64 + 30.0
    assert equity(vector)[4] == round(1330 / 65 * 64, 9)
    assert event.corporate is not None and vector.corporate is not None
    assert event.corporate.dividend_cash == vector.corporate.dividend_cash == 30.0


DIV_BARS = bars({"A": [(1, 100, 100), (2, 100, 100), (3, 99, 99), (4, 99, 99)]})


@pytest.mark.parametrize(("qty", "cash_at_ex", "equity_at_ex"), [
    (10.0, 20.0, 10 * 99 + 20.0),  # long 10: paid 20
    (-10.0, 2000.0 - 20.0, 2000.0 - 20.0 - 10 * 99),  # short 10: pays 20
])
def test_a_dividend_is_paid_in_cash_and_a_short_pays_it(qty: float, cash_at_ex: float,
                                                         equity_at_ex: float) -> None:
    result = run_local(Buy, DIV_BARS, {"qty": qty}, capital=CAPITAL,
                       corporate=corporate(action("A", "dividend", 3, amount=2.0)))
    assert equity(result)[2] == round(equity_at_ex, 9)
    assert Buy.seen[2]["cash"] == pytest.approx(cash_at_ex)  # the strategy sees it
    assert result.corporate is not None and result.corporate.dividends == 1
    assert result.corporate.dividend_cash == pytest.approx(math.copysign(20.0, qty))


def test_a_delisted_position_is_sold_at_the_last_close_and_reported() -> None:
    data = bars({"A": [(1, 100, 100), (2, 100, 90), (3, 85, 80)],
                 "B": [(d, 50, 50) for d in range(1, 6)]})
    acts = corporate(listings=[("id-A", "A", 1, 3, True), ("id-B", "B", 1, 5, False)])
    costs = Costs(commission_bps=10.0)
    result = run_local(Buy, data, {"qty": 10.0}, capital=CAPITAL, corporate=acts, costs=costs,
                       symbols=["A", "B"])
    # Bought 10 at 100 (+1.00 commission): cash −1. A's last bar is day 3 (close 80);
    # at day 4 the broker sells the 10 shares at 80 less 10 bps: cash −1 + 800 − 0.80.
    assert equity(result) == [1000.0, 899.0, 799.0, 798.2, 798.2]
    sale = result.trades().filter(pl.col("type") == "delisting")
    assert sale.select("order_id", "qty", "price").row(0) == (0, -10.0, 80.0)
    assert sale["ts"].to_list() == [ts(4)]
    report = result.corporate
    assert report is not None
    assert report.delisted.select("symbol", "price").row(0) == ("A", 80.0)
    assert report.delisted["proceeds"].item() == pytest.approx(799.2)
    assert [s["position"] for s in Buy.seen] == [0.0, 10.0, 10.0, 0.0, 0.0]


def test_a_rename_carries_the_position_under_the_first_name_the_universe_gives() -> None:
    data = bars({"A": [(1, 100, 100), (2, 100, 110)], "AX": [(3, 110, 120), (4, 120, 130)]})
    acts = corporate(action("A", "rename", 3, new_symbol="AX"))
    result = run_local(Buy, data, {"qty": 10.0}, capital=CAPITAL, corporate=acts,
                       symbols=["A", "AX"])
    assert equity(result) == [1000.0, 1100.0, 1200.0, 1300.0]
    # The strategy never learns the later ticker; the trusted books use the latest one.
    assert {s["symbols"] for s in Buy.seen} == {("A",)}
    assert result.trades()["symbol"].to_list() == ["AX"]
    assert result.corporate is not None and result.corporate.renames == 1


class Watch(pitwall.Strategy):
    """Records the adjusted and raw closes it sees; every earlier value must stay put."""

    history: ClassVar[list[tuple[list[float], list[float]]]] = []

    def on_start(self, ctx: Any) -> None:
        Watch.history = []

    def on_bar(self, ctx: Any) -> None:
        n = ctx.available
        Watch.history.append((ctx.history("adj_close", n, "A").tolist(),
                              ctx.history("close", n, "A").tolist()))


def test_adjusted_prices_reach_the_strategy_only_from_the_effective_day() -> None:
    # The 2:1 split is announced on day 2 and effective on day 3.
    acts = corporate(action("A", "split", 3, announce=2, ratio=2.0))
    run_local(Watch, SPLIT_BARS, capital=CAPITAL, corporate=acts)
    adj = [h[0] for h in Watch.history]
    raw = [h[1] for h in Watch.history]
    # Before the effective day (the announcement included) the adjusted series is the
    # raw one; from it on, later bars are in the old shares' units, so the series is
    # continuous, and what a bar showed is never revised later.
    assert adj[0] == raw[0] == [100.0] and adj[1] == raw[1] == [100.0, 110.0]
    assert adj[2] == [100.0, 110.0, 120.0] and raw[2] == [100.0, 110.0, 60.0]
    assert adj[3] == [100.0, 110.0, 120.0, 132.0]
    for earlier, later in itertools.pairwise(adj):
        assert later[:len(earlier)] == earlier


def test_a_split_adjusts_the_open_orders_of_its_symbol() -> None:
    broker = Broker(2, capital=CAPITAL, max_participation=None)
    broker.submit([(1, 0, 1, 10.0, 50.0, math.nan), (2, 1, 1, 5.0, 40.0, math.nan)], [])
    broker.split(3, 0, 2.0)
    assert (broker.open[1].qty, broker.open[1].limit) == (20.0, 25.0)
    assert (broker.open[2].qty, broker.open[2].limit) == (5.0, 40.0)  # another symbol
    assert broker.changed and broker.snap_steps == [3]
    # After a delisting the symbol's orders are gone and new ones are dropped.
    broker.delist(4, 0, 30.0)
    broker.submit([(3, 0, 0, 1.0, math.nan, math.nan)], [])
    assert list(broker.open) == [2]
    np.testing.assert_array_equal(broker.positions, [0.0, 0.0])
