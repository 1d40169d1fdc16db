"""Synthetic corporate events for the generator: listings, delistings, splits, dividends,
renames (docs/reference-data.md).

Each symbol's events are drawn from a stream seeded by (seed, symbol, range) alone, so
they are deterministic and independent of the other symbols. Rates are those of a broad
US-equity universe over a few years, scaled to the range: some symbols list mid-range, weak
ones drift down for about three months and delist (a few after a reverse split), a few
split 2:1 or 3:1, about half pay quarterly dividends, a few change their ticker.

The simulator (``generate._Simulator``) turns the schedule into unadjusted bars: prices
divide by the ratio from a split's effective day, drop by the dividend on its ex-date,
fall before a delisting, and exist only while the symbol is listed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from pitwall.reference import ACTIONS_SCHEMA, LISTINGS_SCHEMA

if TYPE_CHECKING:
    from numpy.typing import NDArray

# Per-symbol chances over a range of _YEAR trading days (scaled to the range's length).
_YEAR = 252
_P_IPO = 0.12  # lists after the range starts
_P_DELIST = 0.12  # a weak symbol that declines and delists
_P_SPLIT = 0.10
_P_RENAME = 0.04
_P_DIVIDEND_PAYER = 0.5
_DECLINE_DAYS = 63  # a delisting symbol loses ~70% over its last quarter
_DECLINE_LOG = -1.2
_P_REVERSE = 0.3  # of delisting symbols, those that reverse-split 1:10 during the decline
_QUARTER = 63


def seeded_rng(*parts: object) -> np.random.Generator:
    """A generator seeded by a stable hash of ``parts`` (same parts, same stream, always);
    the generator's every stream comes from here (``generate.py``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest[:16], "little")))


def security_id(seed: int, symbol: str) -> str:
    """The id of the security first listed as ``symbol``; it keeps it through renames."""
    return "PW" + hashlib.sha256(f"security\x1f{seed}\x1f{symbol}".encode()).hexdigest()[:10]


@dataclasses.dataclass(frozen=True)
class Action:
    """One scheduled action, by trading-day index into the range."""

    kind: str
    announce: int  # may be negative: announced before the range starts
    effective: int
    ratio: float | None = None  # split
    dividend_yield: float | None = None  # dividend: its amount is yield x the last close
    new_symbol: str | None = None  # rename


@dataclasses.dataclass(frozen=True)
class SymbolEvents:
    """The life of one symbol over the range: trading days ``first..last`` (indices)."""

    symbol: str
    first: int
    last: int
    delisted: bool
    actions: tuple[Action, ...]

    def rename(self) -> Action | None:
        """The symbol change, if any (at most one)."""
        return next((a for a in self.actions if a.kind == "rename"), None)


def _pick(rng: np.random.Generator, p: float, n_days: int) -> bool:
    return bool(rng.random() < 1.0 - (1.0 - p) ** (n_days / _YEAR))


def _symbol_events(seed: int, symbol: str, n_days: int, taken: set[str]) -> SymbolEvents:
    rng = seeded_rng("events", seed, symbol, n_days)
    # Draw every number whatever is used, so one choice does not shift the others.
    u = rng.random(12)
    first = int(u[0] * 0.6 * n_days) if _pick(rng, _P_IPO, n_days) and n_days > 120 else 0
    delist = _pick(rng, _P_DELIST, n_days) and n_days - first > 2 * _DECLINE_DAYS
    last = (first + _DECLINE_DAYS + int(u[1] * (n_days - 1 - first - _DECLINE_DAYS))
            if delist else n_days - 1)
    actions: list[Action] = []

    def day_between(x: float, lo: int, hi: int) -> int:
        return lo + int(x * max(hi - lo, 0))

    if delist and u[2] < _P_REVERSE:
        eff = day_between(u[3], last - _DECLINE_DAYS // 2, last - 5)
        actions.append(Action("split", eff - 10, eff, ratio=0.1))
    if _pick(rng, _P_SPLIT, n_days) and last - first > 40:
        eff = day_between(u[4], first + 30, last)
        actions.append(Action("split", eff - 15 - int(u[5] * 25), eff,
                              ratio=2.0 if u[6] < 0.7 else 3.0))
    if u[7] < _P_DIVIDEND_PAYER:
        quarterly = 0.0025 + 0.0075 * u[8]
        ex = first + 1 + int(u[9] * _QUARTER)
        while ex <= last:
            actions.append(Action("dividend", ex - 20, ex, dividend_yield=quarterly))
            ex += _QUARTER
    if _pick(rng, _P_RENAME, n_days) and last - first > 20:
        eff = day_between(u[10], first + 10, last)
        new = symbol + "X"
        while new in taken:
            new += "X"
        taken.add(new)
        actions.append(Action("rename", eff - 10, eff, new_symbol=new))
    actions = [a for a in actions if first < a.effective <= last]
    return SymbolEvents(symbol, first, last, delist, tuple(sorted(actions,
                                                                  key=lambda a: a.effective)))


@dataclasses.dataclass
class EventRun:
    """The schedule the simulator follows, and the dividend amounts it priced on the way."""

    events: dict[str, SymbolEvents]
    amounts: dict[tuple[str, int], float] = dataclasses.field(default_factory=dict)


def schedule(symbols: Sequence[str], n_days: int, seed: int) -> dict[str, SymbolEvents]:
    """The events of every symbol over a range of ``n_days`` trading days."""
    taken = set(symbols)
    return {s: _symbol_events(seed, s, n_days, taken) for s in sorted(symbols)}


class DayEffects:
    """What the events do to the bars of a block of days, per (symbol, day)."""

    def __init__(self, events: Sequence[SymbolEvents], day_index: NDArray[np.int64]) -> None:
        n, d = len(events), len(day_index)
        self.live = np.zeros((n, d), dtype=np.bool_)
        self.log_offset = np.zeros((n, d))  # log of the raw / economic price factor
        self.log_shares = np.zeros((n, d))  # log of shares per original share (splits)
        self.decline = np.zeros((n, d))  # extra log drift per session
        self.renamed = np.zeros((n, d), dtype=np.bool_)
        for i, ev in enumerate(events):
            self.live[i] = (day_index >= ev.first) & (day_index <= ev.last)
            for a in ev.actions:
                on = day_index >= a.effective
                if a.kind == "split":
                    assert a.ratio is not None
                    self.log_offset[i, on] -= np.log(a.ratio)
                    self.log_shares[i, on] += np.log(a.ratio)
                elif a.kind == "dividend":
                    assert a.dividend_yield is not None
                    self.log_offset[i, on] += np.log1p(-a.dividend_yield)
                else:
                    self.renamed[i, on] = True
            if ev.delisted:
                falling = (day_index > ev.last - _DECLINE_DAYS) & (day_index <= ev.last)
                self.decline[i, falling] = _DECLINE_LOG / _DECLINE_DAYS


def reference_tables(events: dict[str, SymbolEvents], days: Sequence[dt.date], seed: int,
                     amounts: dict[tuple[str, int], float]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The listings and corporate actions of a generated range.

    ``amounts`` holds each dividend's cash amount, keyed by (symbol, ex-date index), as the
    simulator computed it from the last close before the ex-date.
    """
    def day(i: int) -> dt.date:
        # An announcement before the range: count back in weekdays (a close enough guess).
        return days[i] if i >= 0 else days[0] - dt.timedelta(days=-i * 7 // 5 + 1)

    listings: list[tuple[object, ...]] = []
    actions: list[tuple[object, ...]] = []
    for symbol, ev in events.items():
        sid = security_id(seed, symbol)
        rename = ev.rename()
        end_old = ev.last if rename is None else rename.effective - 1
        listings.append((sid, symbol, day(ev.first), day(end_old),
                         ev.delisted and rename is None))
        if rename is not None:
            listings.append((sid, rename.new_symbol, day(rename.effective), day(ev.last),
                             ev.delisted))
        for a in ev.actions:
            before = symbol if rename is None or a.effective <= rename.effective \
                else rename.new_symbol
            amount = amounts.get((symbol, a.effective)) if a.kind == "dividend" else None
            if a.kind == "dividend" and amount is None:
                continue  # no close before the ex-date to price it: left out
            actions.append((sid, before, a.kind, day(a.announce), day(a.effective), a.ratio,
                            amount, a.new_symbol))
    return (pl.DataFrame(listings, schema=LISTINGS_SCHEMA, orient="row")
            .sort("security_id", "first_day"),
            pl.DataFrame(actions, schema=ACTIONS_SCHEMA, orient="row")
            .sort("effective_date", "security_id", "kind"))
