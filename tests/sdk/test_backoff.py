"""The client's backoff: doubling with jitter up to a cap, Retry-After honoured, bounded."""

from __future__ import annotations

import datetime as dt
import email.utils

import pytest

from pitwall.notebook.backoff import Backoff, retry_after_s


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_delays_double_up_to_the_cap_within_the_jitter() -> None:
    clock = Clock()
    outage = Backoff(1000.0, first_s=0.5, cap_s=4.0, jitter=0.2, clock=clock)
    delays = [outage.delay() for _ in range(7)]
    expected = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    for got, want in zip(delays, expected, strict=True):
        assert got is not None and want * 0.8 <= got <= want * 1.2, delays


def test_retry_after_is_honoured_even_above_the_cap() -> None:
    outage = Backoff(60.0, cap_s=4.0, jitter=0.0, clock=Clock())
    assert outage.delay(retry_after=7.0) == 7.0
    assert outage.delay(retry_after=0.0) == 0.0


def test_the_budget_bounds_every_delay_and_then_ends_the_outage() -> None:
    clock = Clock()
    outage = Backoff(5.0, jitter=0.0, clock=clock)
    assert outage.delay(retry_after=30.0) == 5.0  # never sleeps past the budget
    clock.now += 4.5
    assert outage.delay() == pytest.approx(0.5)  # one last try at the deadline
    assert outage.elapsed_s == pytest.approx(4.5)
    clock.now += 0.5
    assert outage.delay() is None


def test_a_callers_deadline_bounds_it_too() -> None:
    clock = Clock()
    outage = Backoff(60.0, jitter=0.0, clock=clock)
    assert outage.delay(retry_after=10.0, until=clock.now + 3.0) == 3.0
    assert outage.delay(until=clock.now) is None


def test_an_answer_starts_the_next_outage_afresh() -> None:
    clock = Clock()
    outage = Backoff(5.0, jitter=0.0, clock=clock)
    outage.delay()
    outage.delay()
    clock.now += 4.9
    outage.reset()
    assert outage.elapsed_s == 0.0
    clock.now += 3.0
    assert outage.delay() == 0.5  # a new outage: first delay again, a full budget


def test_retry_after_headers() -> None:
    assert retry_after_s("2") == 2.0
    assert retry_after_s(" 10 ") == 10.0
    assert retry_after_s(None) is None and retry_after_s("") is None
    assert retry_after_s("soon") is None and retry_after_s("-1") is None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    got = retry_after_s(email.utils.format_datetime(later, usegmt=True))
    assert got is not None and 25 <= got <= 31
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    assert retry_after_s(email.utils.format_datetime(earlier, usegmt=True)) == 0.0
