"""The US equity trading calendar: which days trade, and when each session opens and closes.

The NYSE calendar of ``exchange_calendars`` (XNYS) decides: its rules know the holidays,
the early closes (13:00 New York on the day after Thanksgiving, Christmas Eve, the eve of
Independence Day...) and the one-off closures (Hurricane Sandy on 2012-10-29/30, national
days of mourning), and need no download. The library, and pandas under it, load on first
use (measured: 0.45 s to import, 0.17 s to build 1970–2099) and its sessions are read once
into arrays, so importing this module is free and every later lookup is a dict or array
access.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import functools
import threading
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

NEW_YORK = ZoneInfo("America/New_York")
SESSION_OPEN = dt.time(9, 30)
SESSION_MINUTES = 390  # a regular session, 09:30–16:00; early closes are shorter
#: The days this calendar answers for: the library builds its sessions for a fixed span,
#: once per process.
FIRST_DAY, LAST_DAY = dt.date(1970, 1, 1), dt.date(2099, 12, 31)
_US = 1_000_000
# catch_warnings changes process-wide filters: one loader at a time.
_LOADING = threading.Lock()


@dataclasses.dataclass(frozen=True)
class _Sessions:
    """Every XNYS session of ``FIRST_DAY..LAST_DAY``: days, and open/close in epoch µs UTC."""

    days: list[dt.date]
    index: dict[dt.date, int]
    opens: NDArray[np.int64]
    closes: NDArray[np.int64]


@functools.cache
def _sessions() -> _Sessions:
    import exchange_calendars

    with _LOADING, warnings.catch_warnings():
        # exchange_calendars 4.13 reads ``Series.values`` of tz-aware columns, which pandas
        # 3.1 deprecates; the values it gets are right (UTC), so the warning says nothing
        # to a user of Pitwall.
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray")
        calendar = exchange_calendars.get_calendar("XNYS", start=FIRST_DAY.isoformat(),
                                                   end=LAST_DAY.isoformat())
    schedule = calendar.schedule

    def micros(column: str) -> NDArray[np.int64]:
        naive = schedule[column].dt.tz_convert(None).to_numpy()
        out: NDArray[np.int64] = naive.astype("datetime64[us]").astype(np.int64)
        return out

    days: list[dt.date] = list(schedule.index.date)
    return _Sessions(days, {d: i for i, d in enumerate(days)}, micros("open"), micros("close"))


def _check_span(start: dt.date, end: dt.date) -> None:
    if start < FIRST_DAY or end > LAST_DAY:
        raise ValueError(
            f"{start}..{end} reaches outside the trading calendar, which covers {FIRST_DAY} to "
            f"{LAST_DAY}; pick dates inside it"
        )


def is_trading_day(day: dt.date) -> bool:
    """Whether US equity markets (the NYSE) hold a session on ``day``, full or short."""
    _check_span(day, day)
    return day in _sessions().index


def trading_days(start: dt.date, end: dt.date) -> list[dt.date]:
    """Trading days in ``[start, end]`` (both inclusive), in order.

    Examples
    --------
    >>> trading_days(dt.date(2024, 1, 1), dt.date(2024, 1, 5))  # New Year's Day is closed
    [datetime.date(2024, 1, 2), datetime.date(2024, 1, 3), datetime.date(2024, 1, 4), \
datetime.date(2024, 1, 5)]
    """
    if end < start:
        return []
    _check_span(start, end)
    days = _sessions().days
    return days[bisect.bisect_left(days, start):bisect.bisect_right(days, end)]


@functools.cache
def us_market_holidays(year: int) -> frozenset[dt.date]:
    """Weekdays of ``year`` on which the NYSE held no session (holidays and closures).

    Examples
    --------
    >>> dt.date(2024, 3, 29) in us_market_holidays(2024)  # Good Friday
    True
    >>> dt.date(2012, 10, 29) in us_market_holidays(2012)  # Hurricane Sandy
    True
    """
    first, last = dt.date(year, 1, 1), dt.date(year, 12, 31)
    open_days = set(trading_days(first, last))
    weekdays = (first + dt.timedelta(days=i) for i in range((last - first).days + 1))
    return frozenset(d for d in weekdays if d.weekday() < 5 and d not in open_days)


def _position(day: dt.date) -> int:
    _check_span(day, day)
    at = _sessions().index.get(day)
    if at is None:
        raise ValueError(
            f"{day} is not a trading day (the NYSE held no session); pick one of "
            "trading_days(start, end)"
        )
    return at


def session_open_utc(day: dt.date) -> dt.datetime:
    """The UTC instant the session of ``day`` opens (09:30 New York: 14:30 UTC in winter,
    13:30 UTC in summer). Raises ``ValueError`` when ``day`` is not a trading day."""
    return dt.datetime.fromtimestamp(_sessions().opens[_position(day)] / _US, dt.UTC)


def session_close_utc(day: dt.date) -> dt.datetime:
    """The UTC instant the session of ``day`` closes: 16:00 New York, or 13:00 on an early
    close. Raises ``ValueError`` when ``day`` is not a trading day."""
    return dt.datetime.fromtimestamp(_sessions().closes[_position(day)] / _US, dt.UTC)


def session_minutes(day: dt.date) -> int:
    """Minutes (one-minute bars) in the session of ``day``: 390, or 210 on an early close.

    Examples
    --------
    >>> session_minutes(dt.date(2024, 11, 29))  # the day after Thanksgiving closes at 13:00
    210
    """
    at, sessions = _position(day), _sessions()
    return int(sessions.closes[at] - sessions.opens[at]) // (60 * _US)


def trading_minutes(start: dt.date, end: dt.date) -> int:
    """Minutes of trading in ``[start, end]``: how many one-minute bars a symbol has there.

    Examples
    --------
    >>> trading_minutes(dt.date(2024, 11, 27), dt.date(2024, 11, 29))  # Thanksgiving week
    600
    """
    opens, closes = session_bounds_us(trading_days(start, end))
    return int((closes - opens).sum()) // (60 * _US)


def session_bounds_us(days: Sequence[dt.date]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Opens and closes (epoch µs UTC) of the sessions of ``days``, as two arrays."""
    at = np.array([_position(d) for d in days], dtype=np.int64)
    sessions = _sessions()
    return sessions.opens[at], sessions.closes[at]
