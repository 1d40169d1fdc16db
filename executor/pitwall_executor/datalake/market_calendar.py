"""The US equity trading calendar: which days trade, and when their session opens in UTC.

Rules follow the NYSE holiday schedule (fixed-date holidays move to Friday when they fall
on Saturday and to Monday when on Sunday, except New Year's Day, which is not moved back
into the previous year). Early closes (13:00 on the day after Thanksgiving, ...) are not
modelled: every session here has the full 390 minutes, which keeps the bar grid regular.
"""

from __future__ import annotations

import datetime as dt
import functools
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
SESSION_OPEN = dt.time(9, 30)
SESSION_MINUTES = 390  # 09:30–16:00, one bar per minute, labelled by its start

# One-off closures the rules cannot know (storms, national days of mourning).
_SPECIAL_CLOSURES = frozenset(
    dt.date.fromisoformat(d)
    for d in (
        "2001-09-11", "2001-09-12", "2001-09-13", "2001-09-14",
        "2004-06-11", "2007-01-02", "2012-10-29", "2012-10-30",
        "2018-12-05", "2025-01-09",
    )
)  # fmt: skip


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    """The ``n``-th given weekday (Monday=0) of a month; ``n=-1`` is the last one."""
    if n > 0:
        first = dt.date(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))
    next_month = dt.date(year + month // 12, month % 12 + 1, 1)
    last = next_month - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _easter(year: int) -> dt.date:
    """Gregorian Easter Sunday (anonymous Gregorian algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    g = (8 * b + 13) // 25
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return dt.date(year, month, day + 1)


def _observed(day: dt.date) -> dt.date:
    """Where a fixed-date holiday is observed when it falls on a weekend."""
    if day.weekday() == 5:
        return day - dt.timedelta(days=1)
    if day.weekday() == 6:
        return day + dt.timedelta(days=1)
    return day


@functools.cache
def us_market_holidays(year: int) -> frozenset[dt.date]:
    """Full-day NYSE closures of ``year``.

    Examples
    --------
    >>> dt.date(2024, 3, 29) in us_market_holidays(2024)  # Good Friday
    True
    """
    new_year = dt.date(year, 1, 1)
    days = {
        _nth_weekday(year, 1, 0, 3),  # Martin Luther King Jr. Day
        _nth_weekday(year, 2, 0, 3),  # Washington's Birthday
        _easter(year) - dt.timedelta(days=2),  # Good Friday
        _nth_weekday(year, 5, 0, -1),  # Memorial Day
        _observed(dt.date(year, 7, 4)),
        _nth_weekday(year, 9, 0, 1),  # Labor Day
        _nth_weekday(year, 11, 3, 4),  # Thanksgiving
        _observed(dt.date(year, 12, 25)),
    }
    # A Saturday New Year's Day is not observed on the previous year's last trading day.
    if new_year.weekday() != 5:
        days.add(_observed(new_year))
    if year >= 2022:
        days.add(_observed(dt.date(year, 6, 19)))  # Juneteenth, a market holiday since 2022
    days |= {d for d in _SPECIAL_CLOSURES if d.year == year}
    return frozenset(days)


def is_trading_day(day: dt.date) -> bool:
    """Whether US equity markets hold a regular session on ``day``."""
    return day.weekday() < 5 and day not in us_market_holidays(day.year)


def trading_days(start: dt.date, end: dt.date) -> list[dt.date]:
    """Trading days in ``[start, end]`` (both inclusive), in order.

    Examples
    --------
    >>> trading_days(dt.date(2024, 1, 1), dt.date(2024, 1, 5))  # New Year's Day is closed
    [datetime.date(2024, 1, 2), datetime.date(2024, 1, 3), datetime.date(2024, 1, 4), \
datetime.date(2024, 1, 5)]
    """
    n = (end - start).days + 1
    days = (start + dt.timedelta(days=i) for i in range(max(n, 0)))
    return [d for d in days if is_trading_day(d)]


def session_open_utc(day: dt.date) -> dt.datetime:
    """The UTC instant the regular session of ``day`` opens (09:30 New York time).

    zoneinfo applies the daylight-saving rule of that date, so the open is 14:30 UTC in
    winter and 13:30 UTC in summer.
    """
    local = dt.datetime.combine(day, SESSION_OPEN, tzinfo=NEW_YORK)
    return local.astimezone(dt.UTC)
