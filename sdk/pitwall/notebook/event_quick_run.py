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
from pitwall.engine.corporate import CorporateActions
from pitwall.engine.event_corporate import EventSetup, event_market
from pitwall.engine.event_result import EventResult, build_result
from pitwall.engine.market import Market
from pitwall.event_strategy import Strategy
from pitwall.reference import with_adjusted
from pitwall.schedule import check_schedule, due_mask, next_due


def run_local(strategy_cls: type[Strategy], bars: pl.DataFrame | Market,
              params: Mapping[str, Any] | None = None, *, capital: float = 1_000_000.0,
              costs: Any = None, max_participation: float | None = 0.1,
              symbols: Sequence[str] | None = None,
              corporate: CorporateActions | None = None) -> EventResult:
    """Run ``strategy_cls(**params)`` over ``bars`` with the trusted broker, in-process.

    ``costs`` is a :class:`pitwall.models.Costs` or :class:`BrokerCosts` (default none).
    ``corporate`` (bars as a frame) applies splits, dividends, delistings and renames as
    an official run does, and gives the strategy the point-in-time ``adj_*`` fields
    (docs/reference-data.md §5).

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
    if isinstance(bars, Market):
        if corporate is not None:
            raise ValueError("pass the bars as a frame to apply corporate actions")
        setup = EventSetup(bars, list(bars.symbols), None, None)
    else:
        if corporate is not None and "adj_close" not in bars.columns:
            bars = with_adjusted(bars, corporate.actions)
        universe = (list(symbols) if symbols is not None
                    else sorted(bars.get_column("symbol").unique().to_list()))
        setup = event_market(bars, universe, corporate)
    market, actions = setup.market, setup.actions
    strategy = strategy_cls(**dict(params or {}))
    sched = check_schedule(strategy.schedule())
    broker = Broker(len(market.symbols), capital=capital, costs=_costs(costs),
                    max_participation=max_participation)
    ctx = Context(setup.names, capital=capital, lookback=sched["lookback"], data=market.data,
                  fields=market.fields)
    strategy.on_start(ctx)
    if ctx._pending:
        raise RuntimeError("on_start placed orders; place orders in on_bar (no bar is known "
                           "in on_start)")
    due = due_mask(market.ts, every=sched["every"], at=sched["at"], timezone=sched["timezone"])
    _loop(strategy, ctx, broker, setup, due.tolist(), next_due(due))
    ctx._row = len(market) - 1
    ctx.ts = int(market.ts[-1])
    if actions is not None:
        actions.catch_up(broker, len(market) - 1)
        _sync(ctx, broker)
    strategy.on_end(ctx)
    return build_result(market, broker, actions.report() if actions else None)


def _costs(costs: Any) -> BrokerCosts:
    if costs is None:
        return BrokerCosts()
    return costs if isinstance(costs, BrokerCosts) else BrokerCosts.from_costs(costs)


def _sync(ctx: Context, broker: Broker) -> None:
    """The book's cash and positions into the strategy's portfolio."""
    ctx.portfolio.cash = broker.cash
    ctx.portfolio.positions = broker.positions.copy()
    broker.changed = False


def _loop(strategy: Strategy, ctx: Context, broker: Broker, setup: EventSetup,
          due: list[bool], nxt: list[int]) -> None:
    """The hot loop: only due bars, bars with open orders and bars where an action or a
    universe exit is due are visited."""
    market, actions, members = setup.market, setup.actions, setup.members
    data, ts, n = market.data, market.ts.tolist(), len(market)
    on_bar, on_fill = strategy.on_bar, strategy.on_fill
    pending, cancels, book = ctx._pending, ctx._cancels, broker.open
    portfolio = ctx.portfolio
    upcoming = actions.next if actions is not None else n  # the next corporate action
    leaving = members.next if members is not None else n  # the next universe exit
    outside = members.outside if members is not None else None
    t = nxt[0]
    while t < n:
        ctx._row = t
        ctx.ts = ts[t]
        if t >= upcoming and actions is not None:
            actions.catch_up(broker, t)
            upcoming = actions.next
            _sync(ctx, broker)
        if book:
            fills = broker.execute(t, data[t])
            if fills:
                portfolio.cash = broker.cash
                portfolio.positions = broker.positions.copy()
                for fill in ctx._fills(fills):
                    on_fill(ctx, fill)
        if t >= leaving and members is not None:
            members.leave(broker, t)
            leaving = members.next
        if due[t]:
            on_bar(ctx)
        if pending or cancels:
            broker.submit(*ctx._take_orders(), outside[t] if outside is not None else None)
        t = t + 1 if book else min(nxt[t + 1], upcoming, leaving)
