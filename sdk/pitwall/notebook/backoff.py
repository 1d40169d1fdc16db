"""How the API client waits out an unavailable Backtest API: bounded exponential backoff.

The API answers 503 while its database restarts (with ``Retry-After``), a proxy answers
502/504 while the API restarts, and a connection may be refused or dropped meanwhile.
None of that is the job's fault, and the job keeps running on the server, so a client
that follows a job retries for a while before it gives up and says so.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import random
import time
from collections.abc import Callable


class Backoff:
    """The delays of one outage: ``first_s`` doubling up to ``cap_s`` (±20% jitter, so
    clients that lost the API together do not return together), or the server's
    ``Retry-After``; none once the outage has lasted ``budget_s``.

    >>> outage = Backoff(10.0, jitter=0.0)
    >>> [outage.delay() for _ in range(3)]
    [0.5, 1.0, 2.0]
    >>> outage.delay(retry_after=4.0)
    4.0
    """

    def __init__(self, budget_s: float, *, first_s: float = 0.5, cap_s: float = 10.0,
                 jitter: float = 0.2, clock: Callable[[], float] = time.monotonic) -> None:
        self.budget_s = budget_s
        self.first_s = first_s
        self.cap_s = cap_s
        self.jitter = jitter
        self._clock = clock
        self._started: float | None = None
        self._tries = 0

    @property
    def elapsed_s(self) -> float:
        """How long the current outage has lasted (0 when there is none)."""
        return 0.0 if self._started is None else self._clock() - self._started

    def reset(self) -> None:
        """The API answered: the next failure starts a new outage."""
        self._started = None
        self._tries = 0

    def delay(self, *, retry_after: float | None = None, until: float | None = None,
              ) -> float | None:
        """Seconds to wait before the next try, or None when the outage has outlasted the
        budget (or the clock has reached ``until``, a deadline of the caller's own)."""
        now = self._clock()
        if self._started is None:
            self._started = now
        left = self._started + self.budget_s - now
        if until is not None:
            left = min(left, until - now)
        if left <= 0:
            return None
        if retry_after is None:
            wait = min(self.first_s * 2.0**self._tries, self.cap_s)
            wait *= 1 + random.uniform(-self.jitter, self.jitter)
        else:  # the server knows best how long it needs; the budget still bounds it
            wait = retry_after
        self._tries += 1
        return max(0.0, min(wait, left))


def retry_after_s(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds: delta-seconds or an HTTP date; None if absent
    or unreadable.

    >>> retry_after_s("2"), retry_after_s(None), retry_after_s("soon")
    (2.0, None, None)
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
