"""Event-driven mean reversion with limit orders.

Every ``every`` minutes, each symbol's close is compared with its mean over the last
``window`` bars. Far below (z < -entry): bid for an equal share of equity with a limit
slightly under the close. Back near the mean (z > -exit): offer the position out with
a limit at the mean. Unfilled orders are replaced at the next wake-up. Run it with

    pitwall run examples/mean_reversion_event.py --engine event --symbols AAPL,MSFT \
        --start 2024-01-02 --end 2024-03-28
"""

import numpy as np

import pitwall


class MeanReversion(pitwall.Strategy):
    every = "5min"
    window = 60
    entry = 2.0
    exit = 0.25
    offset_bps = 5.0
    lookback = 60

    def on_bar(self, ctx):
        if ctx.available < self.window:
            return
        closes = ctx.history("close", self.window)
        ctx.cancel_all()  # stale quotes: re-quote with today's numbers
        mean = np.nanmean(closes, axis=0)
        std = np.nanstd(closes, axis=0)
        last = closes[-1]
        share = 1.0 / len(ctx.symbols)
        for j, symbol in enumerate(ctx.symbols):
            if not (std[j] > 0 and np.isfinite(last[j])):
                continue
            z = (last[j] - mean[j]) / std[j]
            held = ctx.portfolio.positions[j]
            if held == 0 and z < -self.entry:
                bid = round(last[j] * (1 - self.offset_bps / 1e4), 2)
                ctx.order_target_percent(symbol, share, limit=bid)
            elif held > 0 and z > -self.exit:
                ctx.order(symbol, -held, limit=round(float(mean[j]), 2))

