from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from pitwall_executor.datalake.market_calendar import (
    NEW_YORK,
    is_trading_day,
    session_close_utc,
    session_minutes,
    session_open_utc,
    trading_days,
    us_market_holidays,
)


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def test_2024_holidays_match_the_nyse_schedule() -> None:
    expected = {
        "2024-01-01", "2024-01-15", "2024-02-19", "2024-03-29", "2024-05-27",
        "2024-06-19", "2024-07-04", "2024-09-02", "2024-11-28", "2024-12-25",
    }  # fmt: skip
    assert us_market_holidays(2024) == {d(x) for x in expected}


def test_weekend_holidays_are_observed_on_the_nearest_weekday() -> None:
    holidays_2022 = us_market_holidays(2022)
    assert d("2022-06-20") in holidays_2022  # Juneteenth on a Sunday
    assert d("2022-12-26") in holidays_2022  # Christmas on a Sunday
    # New Year's Day 2022 was a Saturday: the last day of 2021 still traded.
    assert is_trading_day(d("2021-12-31"))
    assert d("2021-06-18") not in us_market_holidays(2021)  # before Juneteenth was a holiday


@pytest.mark.parametrize("day", ["2001-09-11", "2001-09-14", "2012-10-29", "2012-10-30",
                                 "2018-12-05", "2025-01-09"])
def test_one_off_closures_are_known(day: str) -> None:
    # 9/11, Hurricane Sandy, the national days of mourning for Presidents Bush and Carter.
    assert not is_trading_day(d(day)) and d(day) in us_market_holidays(d(day).year)


def test_a_year_has_252_trading_days_and_no_weekends() -> None:
    days = trading_days(d("2024-01-01"), d("2024-12-31"))
    assert len(days) == 252
    assert all(day.weekday() < 5 for day in days)
    assert trading_days(d("2024-03-09"), d("2024-03-10")) == []  # a weekend


def test_session_opens_at_0930_new_york_across_daylight_saving() -> None:
    utc = dt.UTC
    assert session_open_utc(d("2024-03-08")) == dt.datetime(2024, 3, 8, 14, 30, tzinfo=utc)
    assert session_open_utc(d("2024-03-11")) == dt.datetime(2024, 3, 11, 13, 30, tzinfo=utc)
    assert session_open_utc(d("2024-11-04")) == dt.datetime(2024, 11, 4, 14, 30, tzinfo=utc)


@pytest.mark.parametrize(("day", "close_utc"), [
    ("2024-07-03", dt.datetime(2024, 7, 3, 17, tzinfo=dt.UTC)),  # eve of Independence Day
    ("2024-11-29", dt.datetime(2024, 11, 29, 18, tzinfo=dt.UTC)),  # day after Thanksgiving
    ("2024-12-24", dt.datetime(2024, 12, 24, 18, tzinfo=dt.UTC)),  # Christmas Eve
])
def test_early_closes_end_at_1300_new_york(day: str, close_utc: dt.datetime) -> None:
    assert session_close_utc(d(day)) == close_utc
    assert close_utc.astimezone(NEW_YORK).time() == dt.time(13)
    assert session_minutes(d(day)) == 210


def test_a_regular_session_has_390_minutes_and_a_year_its_sum() -> None:
    assert session_minutes(d("2024-11-27")) == 390
    assert session_close_utc(d("2024-11-27")) == dt.datetime(2024, 11, 27, 21, tzinfo=dt.UTC)
    days = trading_days(d("2024-01-01"), d("2024-12-31"))
    assert sum(map(session_minutes, days)) == 249 * 390 + 3 * 210


def test_a_closed_day_or_a_day_outside_the_calendar_is_refused() -> None:
    with pytest.raises(ValueError, match="2024-03-29 is not a trading day"):
        session_open_utc(d("2024-03-29"))
    with pytest.raises(ValueError, match="outside the trading calendar"):
        trading_days(d("1960-01-01"), d("1960-12-31"))


def test_the_calendar_needs_no_network() -> None:
    # A fresh interpreter whose sockets all fail: the calendar comes from rules alone.
    code = (
        "import socket\n"
        "def refuse(*a, **k):\n    raise OSError('no network here')\n"
        "socket.socket.connect = refuse\nsocket.create_connection = refuse\n"
        "socket.getaddrinfo = refuse\n"
        "import datetime as dt\n"
        "from pitwall_executor.datalake.market_calendar import session_minutes\n"
        "print(session_minutes(dt.date(2012, 11, 23)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.strip() == "210"
