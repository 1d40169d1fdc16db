"""The broker's ledger turned into the engine's result frames (trusted side).

The broker only records the steps where something filled; the equity path is rebuilt
here in one vectorized pass: positions and cash are piecewise constant between fills,
and equity is marked at every close (last known close for a symbol without a bar).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from pitwall.engine.broker import DELISTING, Broker
from pitwall.engine.corporate import CorporateReport
from pitwall.engine.market import Market
from pitwall.engine.vectorized import EngineResult
from pitwall.orders import OrderType


@dataclass(frozen=True, eq=False)
class EventResult(EngineResult):
    """An :class:`EngineResult` (metrics and report work unchanged) with the broker's fills.

    ``fills``: ``ts, symbol, qty, price, notional, cost, order_id, type, commission,
    slippage``, one row per fill (a partial fill is a row; the broker's sale of a delisted
    position is order 0 of type ``delisting``, its closing of a symbol that left the
    universe a negative order id of type ``universe_exit``).
    """

    fills: pl.DataFrame | None = None

    def trades(self) -> pl.DataFrame:
        """Every fill of the run (see the class docstring)."""
        if self.fills is None:
            raise ValueError("this result carries no fills")
        return self.fills

    def positions(self) -> pl.DataFrame:
        """Not built for event runs yet (the report then omits the positions file)."""
        raise ValueError("event-driven results do not carry a positions frame")


def build_result(market: Market, broker: Broker,
                 corporate: CorporateReport | None = None) -> EventResult:
    """Mark the broker's positions at every close and label trades with time and symbol;
    ``corporate`` is what the run's corporate actions did (None: none were given)."""
    n = len(market)
    steps = np.asarray(broker.snap_steps, dtype=np.int64)
    k = np.searchsorted(steps, np.arange(n), side="right")  # 0: before the first fill
    cash = np.concatenate(([broker.capital], broker.snap_cash))[k]
    zeros = np.zeros((1, len(market.symbols)))
    positions = np.concatenate([zeros, *[p[None] for p in broker.snap_positions]])[k]
    held = positions * market.last_close()
    equity = cash + held.sum(axis=1)
    safe = np.where(equity != 0, equity, np.nan)
    before = np.concatenate(([broker.capital], equity[:-1]))
    notional = np.zeros(n)
    cost = np.zeros(n)
    notional[steps] = broker.snap_notional
    cost[steps] = broker.snap_cost
    frame = pl.DataFrame({
        "ts": pl.Series("ts", market.ts, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        "equity": equity,
        "gross_exposure": np.nan_to_num(np.abs(held).sum(axis=1) / safe),
        "net_exposure": np.nan_to_num(held.sum(axis=1) / safe),
        "turnover": np.nan_to_num(notional / np.where(before != 0, before, np.nan)),
        "cost": cost,
    })
    return EventResult(equity=frame, capital=broker.capital, n_trades=len(broker.trades),
                       total_cost=float(cost.sum()), fills=trades_frame(market, broker),
                       liquidity=broker.liquidity if broker.rules.active else None,
                       corporate=corporate)


def trades_frame(market: Market, broker: Broker) -> pl.DataFrame:
    """Every fill, in the columns of :class:`EventResult` ``fills``."""
    rows = broker.trades
    cols: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [[]] * 8
    step, oid, sym, otype, qty, price, comm, slip = cols
    names = ["delisting" if t == DELISTING else "universe_exit" if o < 0
             else OrderType(int(t)).name.lower() for o, t in zip(oid, otype, strict=True)]
    q, px = np.asarray(qty, dtype=np.float64), np.asarray(price, dtype=np.float64)
    total = np.asarray(comm, dtype=np.float64) + np.asarray(slip, dtype=np.float64)
    return pl.DataFrame({
        "ts": pl.Series("ts", market.ts[np.asarray(step, dtype=np.int64)], dtype=pl.Int64
                        ).cast(pl.Datetime("us", "UTC")),
        "symbol": pl.Series("symbol", [market.symbols[s] for s in sym], dtype=pl.String),
        "qty": q,
        "price": px,
        "notional": q * px,
        "cost": total,
        "order_id": pl.Series("order_id", oid, dtype=pl.Int64),
        "type": pl.Series("type", names, dtype=pl.String),
        "commission": pl.Series("commission", comm, dtype=pl.Float64),
        "slippage": pl.Series("slippage", slip, dtype=pl.Float64),
    })
