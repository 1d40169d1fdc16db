"""Per-symbol outputs of a run: trades and positions, built on demand from the path.

The engine computes on weights of a unit capital; a trade or a position in currency and
shares is that weight times the equity it refers to. They are long frames (one row per
``(bar, symbol)`` that traded or held something), built only when asked for, because on
a year of minutes for 100 symbols they hold millions of rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from pitwall.engine.fills import TRADE_EPSILON, Path, Rate
from pitwall.engine.grid import BarGrid, BoolGrid, FloatGrid


@dataclass(frozen=True, eq=False)
class Ledger:
    """What :func:`trades` and :func:`positions` need, kept by an ``EngineResult``."""

    grid: BarGrid
    executed: FloatGrid  # (N, T−1) targets traded at the opens of bars 1..T−1
    path: Path
    rate: Rate
    capital: float
    #: The fill model's lot (shares) when every trade is a whole number of lots; None:
    #: fractional shares (or a run whose corporate actions rescale its shares).
    lot: float | None = None


def trade_weights(ledger: Ledger) -> FloatGrid:
    """``(N, T−1)`` signed trades as fractions of the equity at the open before the trade."""
    path = ledger.path
    if path.trades is not None:
        return path.trades
    assert path.held is not None and path.book_gap is not None and path.fee is not None
    grid = ledger.grid
    opens = np.where(np.isnan(grid.open), 1.0, grid.open)
    held = path.held
    drift = np.zeros_like(held)
    with np.errstate(divide="ignore", invalid="ignore"):
        drift[:, 1:] = held[:, :-1] * (opens[:, 2:] / opens[:, 1:-1])
        drift[:, 1:] /= (1.0 + path.book_gap[:-1])[None, :]
    keep = 1.0 - path.fee[1:]
    present: BoolGrid = grid.present[:, 1:]
    trade = np.where(present, ledger.executed * keep[None, :] - drift, 0.0)
    return np.nan_to_num(trade, nan=0.0, posinf=0.0, neginf=0.0)


def trades(ledger: Ledger) -> pl.DataFrame:
    """One row per ``(bar, symbol)`` traded: ``ts, symbol, qty, price, notional, cost``.

    ``price`` is the fill price (the bar's open); ``qty = notional / price`` (fractional
    shares, negative for a sale); ``cost`` is everything charged on the trade (commission,
    slippage, spread, and market impact under the fill model), in currency. Borrow is not
    a trade cost; it is in the equity.
    """
    grid, path = ledger.grid, ledger.path
    weight = trade_weights(ledger)
    pre = ledger.capital * path.pre[1:]
    mask = np.abs(weight) > TRADE_EPSILON
    rows, cols = np.nonzero(mask)
    notional = weight[rows, cols] * pre[cols]
    price = grid.open[rows, cols + 1]
    if path.trade_cost is not None:  # the fill model: rate and impact of each trade
        cost = path.trade_cost[rows, cols] * pre[cols]
    else:
        rate = ledger.rate
        cell_rate = np.full(len(rows), rate) if isinstance(rate, float) else rate[rows, cols + 1]
        cost = cell_rate * np.abs(notional)
    qty = notional / price
    if ledger.lot:
        # The engine traded whole lots; the weight round trip leaves float noise
        # (760.0000000000001 shares): within 1e-9 of a lot count, the count.
        lots = qty / ledger.lot
        whole = np.round(lots)
        qty = np.where(np.abs(lots - whole) <= 1e-9 * np.maximum(1.0, np.abs(whole)),
                       whole * ledger.lot, qty)
    return _frame(grid, rows, cols + 1, {
        "qty": qty, "price": price, "notional": notional, "cost": cost,
    })


def positions(ledger: Ledger) -> pl.DataFrame:
    """One row per ``(bar, symbol)`` held at the close: ``ts, symbol, qty, price, value, weight``.

    ``price`` is the close (a missing bar's is the last close), ``value`` the position in
    currency, ``weight`` the value over the equity at that close.
    """
    grid, path = ledger.grid, ledger.path
    assert path.held is not None
    closes = np.where(np.isnan(grid.close[:, 1:]), 1.0, grid.close[:, 1:])
    opens = np.where(np.isnan(grid.open[:, 1:]), 1.0, grid.open[:, 1:])
    value = path.held * (closes / opens) * (ledger.capital * path.post[1:])[None, :]
    rows, cols = np.nonzero(value)
    v = value[rows, cols]
    price = closes[rows, cols]
    equity = ledger.capital * path.close[cols + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        weight = np.where(equity > 0, v / equity, 0.0)
    return _frame(grid, rows, cols + 1, {"qty": v / price, "price": price, "value": v,
                                         "weight": weight})


def _frame(
    grid: BarGrid, rows: np.ndarray, cols: np.ndarray, values: dict[str, np.ndarray]
) -> pl.DataFrame:
    """A long frame sorted by ``(symbol, ts)`` (``np.nonzero`` walks the grid row-major)."""
    symbols = pl.Series("symbol", grid.symbols, dtype=pl.String)
    return pl.DataFrame({
        "ts": pl.Series("ts", grid.ts[cols], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        "symbol": symbols.gather(rows),
        **{k: pl.Series(k, v, dtype=pl.Float64) for k, v in values.items()},
    })
