"""Decision times of a stepped run: when the platform asks a vectorized strategy for its
weights on the prefix of bars up to that time (docs/lookahead-audit.md, "Stepped runs").

A schedule names the times in words a researcher uses: ``"bar"`` (every bar), ``"daily"``
(the last bar of each session), ``"30min"`` (the last bar of each 30-minute block of a
session), or ``"at:15:55,12:00"`` (the last bar at or before each New York time, each
session). The weights a stepped run keeps are those of each decision time's bar; the
engine holds a target until the next decision.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from pitwall.models import check_schedule

_NEW_YORK = "America/New_York"
_MINUTES = re.compile(r"^(\d{1,3})min$")


def decision_times(bars: pl.DataFrame, schedule: str) -> list[int]:
    """The decision timestamps (µs since the epoch, UTC, ascending) of ``bars``.

    Example
    -------
    >>> import datetime as dt
    >>> ts = [dt.datetime(2024, 1, d, 14, 30 + m, tzinfo=dt.UTC) for d in (2, 3) for m in range(3)]
    >>> bars = pl.DataFrame({"ts": ts, "symbol": ["A"] * 6})
    >>> [dt.datetime.fromtimestamp(t / 1e6, dt.UTC).strftime("%d %H:%M")
    ...  for t in decision_times(bars, "daily")]
    ['02 14:32', '03 14:32']
    """
    check_schedule(schedule)
    ts = bars.get_column("ts").unique().sort()
    us = ts.dt.epoch("us").to_numpy()
    if schedule == "bar" or us.size == 0:
        return [int(t) for t in us]
    local = ts.dt.convert_time_zone(_NEW_YORK)
    day = local.dt.date().to_numpy()
    minute = (local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)).to_numpy()
    last_of_day = np.append(day[1:] != day[:-1], True)
    if schedule == "daily":
        keep = last_of_day
    elif match := _MINUTES.match(schedule):
        block = (minute - 570) // int(match.group(1))  # blocks from the 09:30 open
        keep = last_of_day | np.append(block[1:] != block[:-1], True)
    else:
        keep = np.zeros(us.size, dtype=bool)
        for text in schedule.removeprefix("at:").split(","):
            hour, mins = (int(x) for x in text.split(":"))
            at = hour * 60 + mins
            before = minute <= at
            # the last bar at or before `at` in each session: a bar before it whose
            # next bar is past it or in the next session
            nxt_after = np.append((minute[1:] > at) | (day[1:] != day[:-1]), True)
            keep |= before & nxt_after
    return [int(t) for t in us[keep]]


def decision_label(schedule: str) -> str:
    """How a report names the schedule ("every bar", "daily", "every 30 minutes", …)."""
    if schedule == "bar":
        return "every bar"
    if schedule == "daily":
        return "at each session's last bar"
    if match := _MINUTES.match(schedule):
        return f"every {match.group(1)} minutes"
    return "at " + schedule.removeprefix("at:").replace(",", ", ") + " New York time"


__all__ = ["check_schedule", "decision_label", "decision_times"]
