"""The trusted broker of the event-driven engine: fills, costs and accounting.

It runs in the worker (or in the kernel for a local quick run), never in the sandbox.
An order placed while bar ``t`` is known is first checked against bar ``t+1``:

* **market**: fills at the open, plus slippage (buys pay ``open·(1+s)``, sells get
  ``open·(1−s)`` with ``s = slippage_bps/1e4``);
* **limit** (buy at ``L``): at the open if ``open ≤ L`` (a gap through the limit gets the
  better price), else at ``L`` if ``low ≤ L``; no slippage. Sells mirror it with ``high``;
* **stop** (buy at ``S``): at the open if ``open ≥ S`` (a gap through the stop fills at
  the open, not at the stop), else at ``S`` if ``high ≥ S``; plus slippage, like market;
* **stop-limit** (stop ``S``, limit ``L``): once triggered (as a stop) it is a limit
  order. Triggered at the open it is checked as a limit on the same bar; triggered inside
  the bar it fills at ``S`` when ``S`` is within the limit, else it rests as a limit from
  the next bar (the bar's range cannot tell whether the price came back after the stop).

A volume cap fills at most ``floor(max_participation · volume)`` shares per symbol and bar,
shared by that symbol's orders in submission order; the rest stays open. With the fill
model (:class:`~pitwall.engine.fill_rules.FillRules`, the same arithmetic as the
vectorized engine's) a fill is also rounded down to lots and not made under the minimum
notional; an order whose whole remainder is under one lot or the minimum can never fill
and is dropped (counted as skipped). A symbol with no bar (``NaN`` open) fills nothing.
Each fill pays ``|q|·price·commission_bps/1e4 + |q|·commission_per_share``, and the
market impact ``Y·σ·√(|q|/volume)·|q|·ref`` (``ref`` the matched price before slippage),
recorded with the slippage. Cash moves by ``−q·price − commission − impact``; equity is
cash plus positions marked at the last known close. Cash may go negative (no margin model).

Corporate actions (:mod:`pitwall.engine.event_corporate`, docs/reference-data.md §4) reach
the book before the bar they take effect on is matched: a split multiplies the position
and the open orders' quantities by its ratio and divides their limit and stop prices by
it; a dividend pays ``position × amount`` in cash (a short pays it); a delisting sells
what is left at the last close as a market sell (commission and slippage) and drops the
symbol's open orders, and the broker drops any later order for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pitwall.engine.fill_rules import (
    FillRules,
    LiquidityStats,
    bar_sigma,
    fill_size,
    impact_fraction,
    participation_room,
)
from pitwall.errors import StrategyOutputError
from pitwall.orders import MAX_PRICE, MAX_QUANTITY, FillTuple, OrderTuple, OrderType

FloatArray = npt.NDArray[np.float64]
# Row order of the fields in a bar cross-section (see pitwall.engine.market).
OPEN, HIGH, LOW, CLOSE, VOLUME = range(5)
_TYPES = frozenset(int(t) for t in OrderType)
#: The order type of the broker's own sale of a delisted position (order id 0).
DELISTING = -1
_NUMBER = (int, float)
_NEEDS_LIMIT = frozenset((int(OrderType.LIMIT), int(OrderType.STOP_LIMIT)))
_NEEDS_STOP = frozenset((int(OrderType.STOP), int(OrderType.STOP_LIMIT)))


@dataclass(frozen=True)
class BrokerCosts:
    """What trading costs: commission in bps of notional and per share, slippage in bps."""

    commission_bps: float = 0.0
    commission_per_share: float = 0.0
    slippage_bps: float = 0.0

    @classmethod
    def from_costs(cls, costs: Any) -> BrokerCosts:
        """From a :class:`pitwall.models.Costs`; a fixed spread adds half of it to the
        slippage of market and stop fills (the ``range`` spread model is not modelled)."""
        half_spread = float(getattr(costs, "spread_bps", 0.0)) / 2  # paid on every fill
        return cls(commission_bps=float(costs.commission_bps),
                   commission_per_share=float(getattr(costs, "commission_per_share", 0.0)),
                   slippage_bps=float(costs.slippage_bps) + half_spread)


class _Open:
    """An open order inside the broker (mutable; ``qty`` is the signed remainder)."""

    __slots__ = ("id", "limit", "qty", "stop", "sym", "triggered", "type")

    def __init__(self, oid: int, sym: int, otype: int, qty: float, limit: float,
                 stop: float) -> None:
        self.id, self.sym, self.type, self.qty = oid, sym, otype, qty
        self.limit, self.stop, self.triggered = limit, stop, False


def validate_orders(orders: list[OrderTuple], n_symbols: int, last_id: int) -> None:
    """Refuse untrusted order records that the SDK would never produce.

    Checks ids (integers, strictly increasing, above ``last_id``), symbol indices, types,
    finite non-zero quantities within :data:`MAX_QUANTITY`, and the limit/stop prices each
    type needs (finite, positive, within :data:`MAX_PRICE`). Plain Python: a step carries
    few orders, and per-call NumPy overhead would dominate.
    """
    prev = last_id
    for oid, sym, otype, qty, limit, stop in orders:
        if type(oid) is not int or oid <= prev:
            raise StrategyOutputError("order ids must be new and increasing; use ctx.order()")
        prev = oid
        if type(sym) is not int or not 0 <= sym < n_symbols:
            raise StrategyOutputError(f"order {oid} names a symbol outside the universe")
        if otype not in _TYPES:
            raise StrategyOutputError(f"order {oid} has an unknown type {otype!r}")
        if not (type(qty) in _NUMBER and 0 < abs(qty) <= MAX_QUANTITY):  # False for NaN
            raise StrategyOutputError(
                f"order {oid}: quantity {qty!r} is zero, not finite or above {MAX_QUANTITY:g}")
        if otype in _NEEDS_LIMIT and not (type(limit) in _NUMBER and 0 < limit <= MAX_PRICE):
            raise StrategyOutputError(f"order {oid}: limit price {limit!r} is missing or invalid")
        if otype in _NEEDS_STOP and not (type(stop) in _NUMBER and 0 < stop <= MAX_PRICE):
            raise StrategyOutputError(f"order {oid}: stop price {stop!r} is missing or invalid")


def _limit_price(buy: bool, limit: float, o: float, h: float, lo: float) -> float | None:
    if buy:
        return o if o <= limit else (limit if lo <= limit else None)
    return o if o >= limit else (limit if h >= limit else None)


def _stop_price(buy: bool, stop: float, o: float, h: float, lo: float) -> float | None:
    if buy:
        return o if o >= stop else (stop if h >= stop else None)
    return o if o <= stop else (stop if lo <= stop else None)


def match(order: _Open, o: float, h: float, lo: float) -> tuple[float | None, bool]:
    """The price at which ``order`` trades on a bar, and whether slippage applies."""
    buy = order.qty > 0
    t = order.type
    if t == OrderType.MARKET:
        return o, True
    if t == OrderType.LIMIT or (t == OrderType.STOP_LIMIT and order.triggered):
        return _limit_price(buy, order.limit, o, h, lo), False
    trigger = _stop_price(buy, order.stop, o, h, lo)
    if t == OrderType.STOP or trigger is None:
        return trigger, True
    order.triggered = True  # a stop-limit from now on
    if trigger == o:  # gapped through the stop at the open: a limit order on this bar
        return _limit_price(buy, order.limit, o, h, lo), False
    within = order.stop <= order.limit if buy else order.stop >= order.limit
    return (order.stop if within else None), False


class Broker:
    """Holds the order book and the account; ``execute`` one bar at a time."""

    def __init__(self, n_symbols: int, *, capital: float, costs: BrokerCosts | None = None,
                 max_participation: float | None = 0.1, rules: FillRules | None = None,
                 ) -> None:
        """``rules`` (the fill model) replaces ``max_participation`` with its own cap."""
        if not (capital > 0 and math.isfinite(capital)):
            raise ValueError(f"capital must be a positive number, got {capital}")
        if rules is not None:
            max_participation = rules.participation
        if max_participation is not None and not 0 < max_participation <= 1:
            raise ValueError("max_participation must be in (0, 1], or None for no volume cap")
        base = rules or FillRules()
        self.rules = FillRules(participation=max_participation, lot_size=base.lot_size,
                               min_trade_notional=base.min_trade_notional,
                               impact_coefficient=base.impact_coefficient)
        self._scalars = self.rules.scalars()
        self.liquidity = LiquidityStats()
        self.n_symbols = n_symbols
        self.capital = float(capital)
        self.cash = float(capital)
        self.positions = np.zeros(n_symbols)
        self.costs = costs or BrokerCosts()
        self.max_participation = max_participation
        self.open: dict[int, _Open] = {}
        self.last_id = 0
        self._comm = self.costs.commission_bps / 1e4
        self._per_share = self.costs.commission_per_share
        self._slip = self.costs.slippage_bps / 1e4
        # The ledger: one snapshot per step with fills, and every fill (trusted record).
        self.snap_steps: list[int] = []
        self.snap_cash: list[float] = []
        self.snap_positions: list[FloatArray] = []
        self.snap_notional: list[float] = []
        self.snap_cost: list[float] = []
        self.trades: list[tuple[int, int, int, int, float, float, float, float]] = []
        #: Set when a corporate action changed cash or positions: the strategy is owed them.
        self.changed = False
        self.delisted: set[int] = set()
        self.refused = 0  # orders dropped: delisted symbol, or outside the universe
        self._own_id = 0  # the broker's own orders count down from -1

    def submit(self, orders: list[OrderTuple], cancels: list[int],
               outside: npt.NDArray[np.bool_] | None = None) -> list[int]:
        """Cancel, then accept new orders (validated); returns the ids actually cancelled.

        New orders are first checked on the next bar given to :meth:`execute`. Cancelling
        an id that is not open (already filled) is a no-op. An order for a delisted
        symbol, or one flagged in ``outside`` (not a member of the run's universe now,
        :mod:`pitwall.engine.event_members`), is dropped and counted in ``refused``.
        """
        # The broker's own orders (ids below 1) are not the strategy's to cancel.
        done = [i for i in cancels if i > 0 and self.open.pop(i, None) is not None]
        if orders:
            validate_orders(orders, self.n_symbols, self.last_id)
            for oid, sym, otype, qty, limit, stop in orders:
                if sym in self.delisted or (outside is not None and outside[sym]):
                    self.refused += 1
                    continue
                self.open[oid] = _Open(oid, sym, otype, qty, limit, stop)
            self.last_id = orders[-1][0]
        return done

    def close_out(self, sym: int) -> int:
        """Drop ``sym``'s open orders and, when something is held, place the broker's own
        market order closing it (a negative id); returns 1 if it placed one, else 0."""
        for oid in [o.id for o in self.open.values() if o.sym == sym]:
            del self.open[oid]
        held = float(self.positions[sym])
        if held == 0.0:
            return 0
        self._own_id -= 1
        self.open[self._own_id] = _Open(self._own_id, sym, int(OrderType.MARKET), -held,
                                        math.nan, math.nan)
        return 1

    def execute(self, step: int, bar: FloatArray) -> list[FillTuple]:
        """Check every open order against ``bar`` (fields × symbols); apply the fills."""
        fills: list[FillTuple] = []
        if not self.open:
            return fills
        used: dict[int, float] = {}
        notional = cost = 0.0
        carried = self.liquidity.capped_fills
        for order in list(self.open.values()):
            s = order.sym
            o = float(bar[OPEN, s])
            if math.isnan(o):  #: no bar for this symbol at this timestamp
                continue
            price, slipped = match(order, o, float(bar[HIGH, s]), float(bar[LOW, s]))
            if price is None:
                continue
            qty = self._sized(order, bar[:, s], price, used)
            if qty == 0.0:
                continue
            ref = price
            if slipped:
                price *= 1.0 + self._slip if qty > 0 else 1.0 - self._slip
            a = abs(qty)
            commission = a * price * self._comm + a * self._per_share
            impact = self._impact(a, ref, bar[:, s])
            slippage = a * abs(price - ref) + impact
            self.cash -= qty * price + commission + impact
            self.positions[s] += qty
            order.qty -= qty
            if abs(order.qty) < 1e-9 * a:
                order.qty = 0.0
                del self.open[order.id]
            notional += a * price
            cost += commission + slippage
            fills.append((order.id, s, qty, price, commission, order.qty))
            self.trades.append((step, order.id, s, order.type, qty, price, commission,
                                slippage))
        self.liquidity.carried_bars += int(self.liquidity.capped_fills > carried)
        if fills:
            self._record(step, notional, cost)
        return fills

    def _record(self, step: int, notional: float, cost: float) -> None:
        """Snapshot the book at ``step``, merged with a snapshot already taken there (a
        corporate action before the same bar's fills)."""
        if self.snap_steps and self.snap_steps[-1] == step:
            self.snap_cash[-1] = self.cash
            self.snap_positions[-1] = self.positions.copy()
            self.snap_notional[-1] += notional
            self.snap_cost[-1] += cost
            return
        self.snap_steps.append(step)
        self.snap_cash.append(self.cash)
        self.snap_positions.append(self.positions.copy())
        self.snap_notional.append(notional)
        self.snap_cost.append(cost)

    # -- corporate actions (docs/reference-data.md §4) ---------------------------------
    def split(self, step: int, sym: int, ratio: float) -> None:
        """``ratio`` new shares per old one from ``step`` on: positions and open orders."""
        self.positions[sym] *= ratio
        for order in self.open.values():
            if order.sym == sym:
                order.qty *= ratio
                order.limit /= ratio  # NaN stays NaN
                order.stop /= ratio
        self.changed = True
        self._record(step, 0.0, 0.0)

    def dividend(self, step: int, sym: int, amount: float) -> float:
        """Pay ``amount`` per share held into the ex-date (a short pays); the cash moved."""
        cash = float(self.positions[sym]) * amount
        if cash:
            self.cash += cash
            self.changed = True
            self._record(step, 0.0, 0.0)
        return cash

    def delist(self, step: int, sym: int, price: float) -> float:
        """Sell what is left of ``sym`` at ``price`` (its last close) as a market order,
        drop its open orders and refuse later ones; returns the cash received."""
        self.delisted.add(sym)
        for oid in [o.id for o in self.open.values() if o.sym == sym]:
            del self.open[oid]
        qty = -float(self.positions[sym])
        if qty == 0.0:
            return 0.0
        a = abs(qty)
        filled = price * (1.0 + self._slip if qty > 0 else 1.0 - self._slip)
        commission = a * filled * self._comm + a * self._per_share
        slippage = a * abs(filled - price)
        received = -qty * filled - commission
        self.cash += received
        self.positions[sym] = 0.0
        self.trades.append((step, 0, sym, DELISTING, qty, filled, commission, slippage))
        self.changed = True
        self._record(step, a * filled, commission + slippage)
        return received

    def _sized(self, order: _Open, fields: FloatArray, price: float,
               used: dict[int, float]) -> float:
        """The signed quantity ``order`` fills on this bar under the fill rules
        (:mod:`pitwall.engine.fill_rules`): the cap's room left by the symbol's earlier
        orders, lots, the minimum notional at ``price``."""
        s, want, stats = order.sym, order.qty, self.liquidity
        participation, lot, minimum, _, needs_volume = self._scalars
        room = participation_room(float(fields[VOLUME]), participation, needs_volume)
        room = max(room - used.get(s, 0.0), 0.0)
        size = fill_size(want, room, price, lot, minimum)
        if abs(want) > room:
            stats.capped_fills += 1
            stats.carried_notional += (abs(want) - size) * price
        elif size == 0.0:  # under one lot or the minimum: it can never fill
            stats.skipped_trades += 1
            del self.open[order.id]
        used[s] = used.get(s, 0.0) + size
        return math.copysign(size, want) if size > 0 else 0.0

    def _impact(self, size: float, ref: float, fields: FloatArray) -> float:
        """The market impact of a fill of ``size`` shares at ``ref``, in currency."""
        coefficient = self.rules.impact_coefficient
        if coefficient == 0:
            return 0.0
        sigma = bar_sigma(float(fields[HIGH]), float(fields[LOW]))
        cost = impact_fraction(size, float(fields[VOLUME]), sigma, coefficient) * size * ref
        self.liquidity.impact_cost += cost
        return cost

    def equity(self, close: FloatArray) -> float:
        """Cash plus positions marked at ``close`` (last known closes, NaN-free)."""
        return self.cash + float(self.positions @ close)
