"""Same SMA crossover on real data (backtesting.py's GOOG daily bars) in three engines.

Conventions matched (docs/engine-conventions.md, "Agreement with other tools"): one signal
(SMA(10) > SMA(20) of the close, computed once and given to every engine), decided at a
bar's close and filled at the next bar's open, the whole equity in the position (Pitwall
weight 1; vectorbt ``size=inf``; backtesting.py a fraction ``1 − 1e-13`` of equity in
units of 1e-12 share, so truncation moves equity by < 1e-12), marked at every close,
and the same commission on every traded notional.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import polars as pl
import pytest
import vectorbt as vbt
from backtesting import Strategy
from backtesting.lib import FractionalBacktest
from backtesting.test import GOOG

from pitwall.engine import run_vectorized, validate_weights
from pitwall.models import Costs
from pitwall.notebook.sweep import rolling_means

CAPITAL = 10_000.0


def _signal() -> np.ndarray:
    close = GOOG["Close"].to_numpy(dtype=np.float64)
    means = rolling_means(close, [10, 20])
    return np.asarray(means[10] > means[20])


def _pitwall(commission: float) -> np.ndarray:
    bars = pl.DataFrame({
        "ts": pl.Series(GOOG.index.to_numpy()).dt.replace_time_zone("UTC"),
        "symbol": "GOOG",
        **{c.lower(): GOOG[c].to_numpy(dtype=np.float64) for c in ("Open", "High", "Low",
                                                                   "Close")},
    })
    raw = bars.select("ts", "symbol", weight=pl.Series(_signal().astype(np.float64)))
    weights = validate_weights(raw, bars, ["GOOG"])
    result = run_vectorized(bars, weights, capital=CAPITAL,
                            costs=Costs(commission_bps=commission * 1e4))
    return result.equity.get_column("equity").to_numpy()


def _vectorbt(commission: float) -> np.ndarray:
    held = pd.Series(_signal(), index=GOOG.index).shift(1, fill_value=False)
    entries = held & ~held.shift(1, fill_value=False)
    exits = ~held & held.shift(1, fill_value=False)
    portfolio = vbt.Portfolio.from_signals(
        GOOG["Close"], entries, exits, price=GOOG["Open"], size=np.inf, init_cash=CAPITAL,
        fees=commission, freq="1D",
    )
    return np.asarray(portfolio.value().to_numpy())


class _Cross(Strategy):  # type: ignore[misc]
    signal: np.ndarray = np.zeros(0, dtype=bool)

    def init(self) -> None:
        pass

    def next(self) -> None:
        now = len(self.data) - 1
        if self.signal[now] and not self.position:
            self.buy(size=1 - 1e-13)
        elif not self.signal[now] and self.position:
            self.position.close()


def _backtesting(commission: float) -> np.ndarray:
    _Cross.signal = _signal()
    with warnings.catch_warnings():  # the peer's own warnings are not under test
        warnings.simplefilter("ignore")
        test = FractionalBacktest(GOOG, _Cross, cash=CAPITAL, commission=commission,
                                  fractional_unit=1e-12, finalize_trades=False)
        stats = test.run()
    return np.asarray(stats["_equity_curve"]["Equity"].to_numpy(dtype=np.float64))


@pytest.mark.parametrize("commission", [0.0, 0.001])
def test_pitwall_vectorbt_and_backtesting_give_the_same_equity(commission: float) -> None:
    ours = _pitwall(commission)
    assert len(ours) == len(GOOG) == 2148
    assert int(np.count_nonzero(np.diff(_signal().astype(int)))) > 50  # many round trips
    for name, theirs in (("vectorbt", _vectorbt(commission)),
                         ("backtesting.py", _backtesting(commission))):
        worst = float(np.max(np.abs(theirs / ours - 1.0)))
        assert worst < 1e-9, f"{name} differs from Pitwall by {worst:.2e} (relative)"
    assert abs(ours[-1] / CAPITAL - 1) > 0.1  # the strategy does something
