"""``ctx``: what a strategy sees and does at a bar (strategy side, untrusted in a sandbox).

Bars live in one float64 block ``(rows, field, symbol)``; ``ctx.history`` returns NumPy
*views* of its last rows (no copy per bar). In the sandbox the block is a buffer filled
from the lock-step channel with bars up to ``ctx.now`` only; in a local run it is the
market cube itself, read up to the current row. Orders are queued here and sent to the
trusted broker after the callback returns; they are first checked against the next bar.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from pitwall.orders import Fill, FillTuple, Order, OrderTuple, OrderType

FIELDS = ("open", "high", "low", "close", "volume")
_CLOSE = FIELDS.index("close")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
FloatArray = npt.NDArray[np.float64]


class Portfolio:
    """Cash and positions after the last fill; equity marked at the latest close."""

    __slots__ = ("_ctx", "cash", "positions")

    def __init__(self, ctx: Context, cash: float, n_symbols: int) -> None:
        self._ctx = ctx
        self.cash = cash
        self.positions: FloatArray = np.zeros(n_symbols)

    @property
    def equity(self) -> float:
        """Cash plus positions at the last known closes."""
        return self.cash + float(self.positions @ self._ctx.last_close())

    def position(self, symbol: str) -> float:
        """Shares held of ``symbol`` (negative when short)."""
        return float(self.positions[self._ctx.index(symbol)])


class Context:
    """The strategy's view of the run at ``now``; see the module docstring."""

    def __init__(self, symbols: Sequence[str], *, capital: float, lookback: int,
                 data: FloatArray, fields: Sequence[str] = FIELDS) -> None:
        self.symbols: tuple[str, ...] = tuple(symbols)
        #: What ``history`` can return: OHLCV, and on a dataset with corporate actions the
        #: point-in-time adjusted ``adj_open … adj_volume`` (docs/reference-data.md §5).
        self.fields: tuple[str, ...] = tuple(fields)
        self._field = {name: i for i, name in enumerate(self.fields)}
        self._index = {s: i for i, s in enumerate(self.symbols)}
        self.portfolio = Portfolio(self, float(capital), len(self.symbols))
        self.lookback = int(lookback)
        self.ts = 0  # µs since the epoch, UTC, of the current bar
        self._data = data
        self._row = -1  # the current bar's row in _data
        self._dropped = 0  # rows no longer in _data (sandbox buffer compaction)
        self._base_close = np.full(len(self.symbols), np.nan)  # closes before _data
        self._pending: list[OrderTuple] = []
        self._cancels: list[int] = []
        self._open: dict[int, Order] = {}
        self._next_id = 1

    # -- data ---------------------------------------------------------------------------
    @property
    def now(self) -> dt.datetime:
        """Timestamp (UTC) of the current bar, whose close is known."""
        return _EPOCH + dt.timedelta(microseconds=self.ts)

    @property
    def available(self) -> int:
        """How many bars ``history`` can return now (grows to ``lookback``)."""
        return min(self._row + 1 + self._dropped, self.lookback)

    def index(self, symbol: str) -> int:
        """Column of ``symbol`` in the arrays ``history`` returns."""
        try:
            return self._index[symbol]
        except KeyError:
            raise KeyError(f"symbol {symbol!r} is not in this run's universe "
                           f"{list(self.symbols)[:10]}") from None

    def history(self, field: str, n: int, symbol: str | None = None) -> FloatArray:
        """The last ``n`` bars of ``field`` up to now: shape ``(n, symbols)``, or ``(n,)``
        for one ``symbol``. A read-only view: copy it before keeping it past the callback.
        ``NaN`` marks a symbol without a bar at a timestamp.
        """
        f = self._field_at(field)
        end = self._row + 1
        if n > end + self._dropped or n > self.lookback or n < 1:
            raise ValueError(f"history({field!r}, {n}) asks for more than the "
                             f"{min(end + self._dropped, self.lookback)} bars available; "
                             "wait for more bars or raise the strategy's lookback")
        out: FloatArray = (self._data[end - n:end, f] if symbol is None
                           else self._data[end - n:end, f, self.index(symbol)])
        return out

    def _field_at(self, field: str) -> int:
        f = self._field.get(field)
        if f is None:
            raise KeyError(f"field {field!r} does not exist in this run; use one of "
                           f"{self.fields}")
        return f

    def current(self, field: str, symbol: str | None = None) -> Any:
        """The current bar's ``field``: a float for ``symbol``, else one per symbol."""
        row = self._data[self._row, self._field_at(field)]
        return row if symbol is None else float(row[self.index(symbol)])

    def last_close(self) -> FloatArray:
        """The last known close of every symbol (``NaN`` before its first bar)."""
        row: FloatArray = self._data[self._row, _CLOSE]
        if not np.isnan(row).any():
            return row
        out: FloatArray = row.copy()
        data = self._data
        lo = max(self._row - 8, 0)  # a short gap: rows [lo, now) one by one, newest first
        for r in range(self._row - 1, lo - 1, -1):
            gaps = np.isnan(out)
            if not gaps.any():
                return out
            out[gaps] = data[r, _CLOSE][gaps]
        idx = np.flatnonzero(np.isnan(out))
        if len(idx) and lo > 0:  # a long gap: the last close before row lo, in one pass
            seen = ~np.isnan(data[:lo, _CLOSE][:, idx])
            found = seen.any(axis=0)
            last = lo - 1 - np.argmax(seen[::-1], axis=0)
            out[idx[found]] = data[last[found], _CLOSE, idx[found]]
            idx = idx[~found]
        out[idx] = self._base_close[idx]
        return out

    def is_member(self, symbol: str) -> bool:
        """Whether ``symbol`` is in the run's universe now: its ``member`` flag at its last
        bar (always True for a run without a universe rule). The broker drops orders for
        a symbol that is not, and closes what is held of a symbol when it leaves."""
        f = self._field.get("member")
        if f is None:
            return True
        column = self._data[:self._row + 1, f, self.index(symbol)]
        seen = np.flatnonzero(~np.isnan(column))
        return bool(column[seen[-1]] != 0.0) if seen.size else True

    def price(self, symbol: str) -> float:
        """The last known close of ``symbol``."""
        return float(self.last_close()[self.index(symbol)])

    # -- orders -------------------------------------------------------------------------
    def order(self, symbol: str, quantity: float, *, limit: float | None = None,
              stop: float | None = None) -> int:
        """Buy (``quantity > 0``) or sell; market, limit, stop or stop-limit by the prices
        given. Returns the order id (for ``cancel``). Fills start at the next bar.
        """
        s = self.index(symbol)
        q = float(quantity)
        if not math.isfinite(q) or q == 0.0:
            raise ValueError(f"order quantity {quantity!r} must be a finite non-zero number")
        if "member" in self._field and not self.is_member(symbol):
            raise ValueError(f"{symbol} is not in the run's universe at {self.now:%Y-%m-%d}; "
                             "check ctx.is_member(symbol) before ordering it")
        for name, p in (("limit", limit), ("stop", stop)):
            if p is not None and not (math.isfinite(p) and p > 0):
                raise ValueError(f"{name} price {p!r} must be a finite positive number")
        otype = OrderType.of(limit, stop)
        oid = self._next_id
        self._next_id += 1
        self._pending.append((oid, s, int(otype), q, math.nan if limit is None else
                              float(limit), math.nan if stop is None else float(stop)))
        self._open[oid] = Order(oid, symbol, otype, q, limit, stop, q)
        return oid

    def order_target(self, symbol: str, quantity: float, *, limit: float | None = None,
                     ) -> int | None:
        """Order the difference between ``quantity`` and the position plus open orders."""
        s = self.index(symbol)
        pending = sum(o.remaining for o in self._open.values() if o.symbol == symbol)
        delta = quantity - float(self.portfolio.positions[s]) - pending
        return self.order(symbol, delta, limit=limit) if abs(delta) > 1e-12 else None

    def order_target_percent(self, symbol: str, percent: float, *, limit: float | None = None,
                             whole_shares: bool = True) -> int | None:
        """Order toward ``percent`` of equity in ``symbol`` at its last close (``0.5``
        = 50 %, negative = short); open orders of the symbol count as already done.
        """
        price = self.price(symbol)
        if not price > 0:
            raise ValueError(f"{symbol} has no price yet; wait for its first bar")
        target = percent * self.portfolio.equity / price
        return self.order_target(symbol, math.trunc(target) if whole_shares else target,
                                 limit=limit)

    def cancel(self, order_id: int) -> bool:
        """Cancel an open order before the next bar; False if it is no longer open."""
        if self._open.pop(order_id, None) is None:
            return False
        self._cancels.append(order_id)
        return True

    def cancel_all(self, symbol: str | None = None) -> int:
        """Cancel every open order (of ``symbol``); returns how many."""
        ids = [i for i, o in self._open.items() if symbol is None or o.symbol == symbol]
        for i in ids:
            self.cancel(i)
        return len(ids)

    @property
    def open_orders(self) -> list[Order]:
        """Orders not yet fully filled or cancelled, oldest first."""
        return list(self._open.values())

    # -- engine side (called by the local driver and the sandbox loop) -------------------
    def _take_orders(self) -> tuple[list[OrderTuple], list[int]]:
        orders, cancels = self._pending[:], self._cancels[:]
        self._pending.clear()
        self._cancels.clear()
        return orders, cancels

    def _fills(self, fills: list[FillTuple]) -> list[Fill]:
        """Update the open orders with fills; the Fill objects for ``on_fill``."""
        out = []
        now = self.now
        for oid, s, qty, price, commission, remaining in fills:
            order = self._open.get(oid)
            if order is not None:
                order.remaining = remaining
                if remaining == 0.0:
                    del self._open[oid]
            out.append(Fill(oid, self.symbols[s], qty, price, commission, remaining, now))
        return out
