"""A local quick run of an event-driven strategy in the kernel: no sandbox, no channel.

The same broker, schedule and result as an official run, with the strategy called
in-process; ``ctx.history`` returns views of the bars up to the current one. Nothing
stops deliberate peeking here (the strategy runs in your own process): only official
runs are point-in-time by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from pitwall.context import Context
from pitwall.engine.broker import Broker, BrokerCosts
from pitwall.engine.event_result import EventResult, build_result
from pitwall.engine.market import Market
from pitwall.event_strategy import Strategy
from pitwall.schedule import check_schedule, due_mask, next_due


def run_local(strategy_cls: type[Strategy], bars: pl.DataFrame | Market,
              params: Mapping[str, Any] | None = None, *, capital: float = 1_000_000.0,
              costs: Any = None, max_participation: float | None = 0.1,
              symbols: Sequence[str] | None = None) -> EventResult:
    """Run ``strategy_cls(**params)`` over ``bars`` with the trusted broker, in-process.

    ``costs`` is a :class:`pitwall.models.Costs` or :class:`BrokerCosts` (default none).

    Example
    -------
    >>> import datetime as dt, polars as pl, pitwall
    >>> ts = [dt.datetime(2024, 1, 2, 14, 30 + i, tzinfo=dt.UTC) for i in range(3)]
    >>> bars = pl.DataFrame({"ts": ts, "symbol": "A", "open": [10.0, 10.0, 11.0],
    ...     "high": 11.0, "low": 10.0, "close": [10.0, 11.0, 11.0], "volume": 1e6})
    >>> class Buy(pitwall.Strategy):
    ...     def on_bar(self, ctx):
    ...         if not ctx.portfolio.positions[0] and not ctx.open_orders:
    ...             ctx.order("A", 10)
    >>> run_local(Buy, bars, capital=1000.0).final_equity
    1010.0
    """
    market = bars if isinstance(bars, Market) else Market.from_bars(bars, symbols)
    strategy = strategy_cls(**dict(params or {}))
    sched = check_schedule(strategy.schedule())
    broker = Broker(len(market.symbols), capital=capital, costs=_costs(costs),
                    max_participation=max_participation)
    ctx = Context(market.symbols, capital=capital, lookback=sched["lookback"], data=market.data)
    strategy.on_start(ctx)
    if ctx._pending:
        raise RuntimeError("on_start placed orders; place orders in on_bar (no bar is known "
                           "in on_start)")
    due = due_mask(market.ts, every=sched["every"], at=sched["at"], timezone=sched["timezone"])
    _loop(strategy, ctx, broker, market, due.tolist(), next_due(due))
    ctx._row = len(market) - 1
    ctx.ts = int(market.ts[-1])
    strategy.on_end(ctx)
    return build_result(market, broker)


def _costs(costs: Any) -> BrokerCosts:
    if costs is None:
        return BrokerCosts()
    return costs if isinstance(costs, BrokerCosts) else BrokerCosts.from_costs(costs)


def _loop(strategy: Strategy, ctx: Context, broker: Broker, market: Market,
          due: list[bool], nxt: list[int]) -> None:
    """The hot loop: only due bars and bars with open orders are visited."""
    data, ts, n = market.data, market.ts.tolist(), len(market)
    on_bar, on_fill = strategy.on_bar, strategy.on_fill
    pending, cancels, book = ctx._pending, ctx._cancels, broker.open
    portfolio = ctx.portfolio
    t = nxt[0]
    while t < n:
        ctx._row = t
        ctx.ts = ts[t]
        if book:
            fills = broker.execute(t, data[t])
            if fills:
                portfolio.cash = broker.cash
                portfolio.positions = broker.positions.copy()
                for fill in ctx._fills(fills):
                    on_fill(ctx, fill)
        if due[t]:
            on_bar(ctx)
        if pending or cancels:
            broker.submit(*ctx._take_orders())
        t = t + 1 if book else nxt[t + 1]
