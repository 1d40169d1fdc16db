"""A universe rule in event mode (docs/reference-data.md §7): the broker trades members
only and closes what is held of a symbol when it leaves, as the vectorized engine holds
weight 0 there. One bar a day at 15:00 UTC; capital 1,000; no costs."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pytest

import pitwall
from pitwall.engine.broker import Broker
from pitwall.notebook.event_quick_run import run_local

DAYS = [dt.date(2024, 1, d) for d in (2, 3, 4, 5, 8)]


def bars(member_b: list[bool]) -> pl.DataFrame:
    """A at 100 throughout; B at 50, 50, 50, 60, 60 with the given member flags."""
    rows = []
    for i, d in enumerate(DAYS):
        at = dt.datetime(d.year, d.month, d.day, 15, tzinfo=dt.UTC)
        b = 50.0 if i < 3 else 60.0
        rows += [(at, "A", 100.0, 100.0, True), (at, "B", b, b, member_b[i])]
    frame = pl.DataFrame(rows, schema={"ts": pl.Datetime("us", "UTC"), "symbol": pl.String,
                                       "open": pl.Float64, "close": pl.Float64,
                                       "member": pl.Boolean}, orient="row")
    return frame.with_columns(high=pl.col("open"), low=pl.col("open"), volume=pl.lit(1e9))


class BuyB(pitwall.Strategy):
    """Buys 10 B on day 1; from day 3 on tries to buy more of it, as a careless strategy
    would, and records what it is told."""

    seen: ClassVar[list[Any]] = []

    def on_start(self, ctx: Any) -> None:
        BuyB.seen = []

    def on_bar(self, ctx: Any) -> None:
        BuyB.seen.append((ctx.is_member("B"), ctx.portfolio.position("B")))
        if len(BuyB.seen) == 1:
            ctx.order("B", 10)
        elif len(BuyB.seen) >= 3:
            with pytest.raises(ValueError, match="not in the run's universe"):
                ctx.order("B", 5)


def test_a_symbol_that_leaves_is_closed_by_the_broker_at_the_next_open() -> None:
    # B leaves at day 3's evaluation: the broker sells at day 4's open (60).
    result = run_local(BuyB, bars([True, True, False, False, False]), capital=1000.0)
    assert [round(x, 9) for x in result.equity["equity"]] == [1000.0] * 3 + [1100.0] * 2
    trades = result.trades().select("ts", "symbol", "qty", "price", "order_id", "type")
    assert trades.rows() == [
        (dt.datetime(2024, 1, 3, 15, tzinfo=dt.UTC), "B", 10.0, 50.0, 1, "market"),
        (dt.datetime(2024, 1, 5, 15, tzinfo=dt.UTC), "B", -10.0, 60.0, -1, "universe_exit")]
    assert BuyB.seen == [(True, 0.0), (True, 10.0), (False, 10.0), (False, 0.0),
                         (False, 0.0)]


def test_the_broker_refuses_orders_for_non_members_and_keeps_its_own() -> None:
    broker = Broker(2, capital=1000.0, max_participation=None)
    broker.positions[1] = 10.0
    outside = np.array([False, True])  # B is not a member now
    broker.submit([(1, 0, 0, 1.0, float("nan"), float("nan")),
                   (2, 1, 0, 1.0, float("nan"), float("nan"))], [], outside=outside)
    assert list(broker.open) == [1] and broker.refused == 1
    assert broker.close_out(1) == 1 and broker.open[-1].qty == -10.0
    # The strategy cannot cancel the broker's closing order.
    assert broker.submit([], [-1]) == [] and -1 in broker.open
