"""Strategy sources shared by tests in several folders."""

from __future__ import annotations


def slow_event(sleep_s: float) -> str:
    """An event strategy that sleeps ``sleep_s`` every bar (so the job runs for a few
    seconds and reports progress as it goes) and trades AAPL every 30 bars, so the equity
    moves between progress events."""
    return f"""import time
import pitwall


class Churn(pitwall.Strategy):
    lookback = 1

    def on_start(self, ctx):
        self.n = 0

    def on_bar(self, ctx):
        time.sleep({sleep_s!r})
        self.n += 1
        if self.n % 30 == 0:
            ctx.order_target_percent("AAPL", 0.9 if (self.n // 30) % 2 else 0.0)
"""
