"""Corporate actions in event mode: the same reference data as the vectorized engine,
applied to the broker's book as the feeder reaches them (docs/reference-data.md §4).

:func:`plan_events` lays the actions on the market's timestamps with the vectorized
engine's rules (:func:`pitwall.engine.corporate.plan`): a split or a dividend takes effect
at the symbol's first bar on or after its effective day, a delisting at the first
timestamp after the symbol's last bar. :meth:`EventActions.catch_up` applies every action
due by a bar before the broker matches that bar, each recorded at its own timestamp, so
the equity curve marks post-split shares at post-split closes even when the feeder skips
the bar. Bars stay unadjusted; the strategy sees the point-in-time adjusted prices as
extra fields (:data:`pitwall.engine.market.ADJUSTED_FIELDS`).

Renames key a security by its latest symbol (:func:`event_universe`), as in the
vectorized engine; the strategy names each security as the run's universe first lists
it, so it never learns a later ticker before the rename. A universe rule's ``member``
flags travel the same way (:mod:`pitwall.engine.event_members`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from pitwall.engine.broker import Broker
from pitwall.engine.corporate import (
    CorporateActions,
    CorporateReport,
    latest_symbols,
    plan,
    relabel,
    relabel_actions,
)
from pitwall.engine.event_members import MEMBER, Members
from pitwall.engine.grid import BarGrid
from pitwall.engine.market import ADJUSTED_FIELDS, CLOSE, FIELDS, Market

OPEN = FIELDS.index("open")


def event_universe(universe: Sequence[str],
                   corporate: CorporateActions | None) -> tuple[list[str], list[str]]:
    """``(keys, names)``: one column per security of ``universe``, keyed by its latest
    symbol (the trusted side's name, in trades and positions) and named for the strategy
    by the first of its symbols the universe lists."""
    latest = latest_symbols(corporate) if corporate is not None else {}
    named: dict[str, str] = {}  # key → the strategy's name, in the universe's order
    for symbol in universe:
        named.setdefault(latest.get(symbol, symbol), symbol)
    return list(named), list(named.values())


@dataclass(frozen=True, eq=False)
class EventSetup:
    """What an event run needs of its bars and reference data: the market cube (with the
    adjusted fields and ``member`` when the bars carry them), the strategy's names of its
    columns, the corporate actions laid on it and the universe rule's members (None when
    the run has none)."""

    market: Market
    names: list[str]
    actions: EventActions | None
    members: Members | None


def event_market(bars: pl.DataFrame, universe: Sequence[str],
                 corporate: CorporateActions | None) -> EventSetup:
    """Lay out an event run's bars (see :class:`EventSetup`)."""
    keys, names = event_universe(universe, corporate)
    extra = [f for f in (*ADJUSTED_FIELDS, MEMBER) if f in bars.columns]
    if MEMBER in extra:
        bars = bars.with_columns(pl.col(MEMBER).cast(pl.Float64))
    if corporate is not None:
        corporate = relabel_actions(corporate)
        bars = relabel(bars, corporate)
    market = Market.from_bars(bars, keys, extra=extra)
    members = (Members(market.data[:, market.fields.index(MEMBER), :]) if MEMBER in extra
               else None)
    actions = plan_events(market, corporate) if corporate is not None else None
    return EventSetup(market, names, actions, members)


class EventActions:
    """The actions of one run in the order they take effect; applied once each."""

    def __init__(self, market: Market, cols: np.ndarray, kinds: list[str], rows: np.ndarray,
                 values: np.ndarray, renames: int) -> None:
        order = np.argsort(cols, kind="stable")
        self._market = market
        self._cols = cols[order].tolist()
        self._kinds = [kinds[i] for i in order]
        self._rows = rows[order].tolist()
        self._values = values[order].tolist()
        self._done = 0
        self._renames = renames
        self._dividend_cash = 0.0
        self._delisted: list[tuple[str, int, float, float]] = []
        #: The timestamp index of the next action (len(market) when none is left).
        self.next = self._cols[0] if self._cols else len(market)

    def catch_up(self, broker: Broker, t: int) -> None:
        """Apply to ``broker`` every action due at or before bar ``t``, in order."""
        cols, n = self._cols, len(self._cols)
        while self._done < n and cols[self._done] <= t:
            i = self._done
            col, row, value = cols[i], self._rows[i], self._values[i]
            kind = self._kinds[i]
            if kind == "split":
                broker.split(col, row, value)
            elif kind == "dividend":
                self._dividend_cash += broker.dividend(col, row, value)
            else:  # delisting: ``value`` is the column of the symbol's last bar
                last = int(value)
                price = float(self._market.data[last, CLOSE, row])
                proceeds = broker.delist(col, row, price)
                self._delisted.append((self._market.symbols[row],
                                       int(self._market.ts[last]), price, proceeds))
            self._done += 1
        self.next = cols[self._done] if self._done < n else len(self._market)

    def report(self) -> CorporateReport:
        """What the actions applied so far did (the vectorized engine's report)."""
        done = self._kinds[:self._done]
        delisted = pl.DataFrame(self._delisted, schema={
            "symbol": pl.String, "last_ts": pl.Int64, "price": pl.Float64,
            "proceeds": pl.Float64}, orient="row").with_columns(
            pl.col("last_ts").cast(pl.Datetime("us", "UTC")))
        return CorporateReport(splits=done.count("split"), dividends=done.count("dividend"),
                               dividend_cash=self._dividend_cash, renames=self._renames,
                               delisted=delisted)


def plan_events(market: Market, corporate: CorporateActions) -> EventActions:
    """Lay ``corporate`` (already :func:`relabel_actions`-ed, keyed like ``market``'s
    symbols) on the market's timestamps with the vectorized engine's rules."""
    open_ = market.data[:, OPEN, :].T
    grid = BarGrid(ts=market.ts, symbols=market.symbols, open=open_,
                   close=market.data[:, CLOSE, :].T, present=~np.isnan(open_), cells=None)
    laid = plan(grid, corporate)
    cols = [e.col for e in laid.events] + [last + 1 for _, last in laid.delist]
    rows = [e.row for e in laid.events] + [row for row, _ in laid.delist]
    kinds = [e.kind for e in laid.events] + ["delisting"] * len(laid.delist)
    values = [e.value for e in laid.events] + [float(last) for _, last in laid.delist]
    return EventActions(market, np.asarray(cols, dtype=np.int64), kinds,
                        np.asarray(rows, dtype=np.int64), np.asarray(values, dtype=np.float64),
                        laid.renames)
