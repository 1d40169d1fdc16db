"""Local quick runs: scheduling wakes only due bars; history is point-in-time views."""

from __future__ import annotations

import numpy as np
from tests.execution.conftest import minute_bars

import pitwall
from pitwall.events import Context, Fill, Market, run_local


def test_schedule_wakes_only_due_bars_and_fills_still_reach_on_fill() -> None:
    market = Market.from_bars(minute_bars(["AAPL", "MSFT"], days=2))
    seen: list[str] = []
    fills: list[Fill] = []

    class Rare(pitwall.Strategy):
        every = "15min"
        at = "15:55"

        def on_bar(self, ctx: Context) -> None:
            seen.append(f"{ctx.now:%H:%M}")
            view = ctx.history("close", 1)
            assert np.shares_memory(view, market.data)  # a view, not a copy
            if len(seen) == 1:
                ctx.order("AAPL", 10)

        def on_fill(self, ctx: Context, fill: Fill) -> None:
            fills.append(fill)

    result = run_local(Rare, market, capital=1e6)
    # 09:30..15:45 every 15 min (26) + 15:55 in New York = 27 wake-ups a day; UTC 14:30..
    assert len(seen) == 54
    assert seen[:3] == ["14:30", "14:45", "15:00"] and "20:55" in seen
    assert len(fills) == 1 and fills[0].quantity == 10 and f"{fills[0].ts:%H:%M}" == "14:31"
    assert fills[0].price == market.data[1, 0, 0]  # the open of the bar after the decision
    assert result.n_trades == 1
