from __future__ import annotations

import datetime as dt

from pitwall_executor.datalake.market_calendar import (
    is_trading_day,
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
