"""When a strategy is woken: ``every="15min"`` and/or ``at="15:55"`` (exchange time).

The strategy declares its schedule; the trusted feeder parses it again (it came out of
the sandbox) and computes the due timestamps itself, so a bar that wakes nobody and
checks no open order is never a round trip.

>>> parse_every("15min"), parse_at(["09:31", "15:55"])
(15, [571, 955])
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

_EVERY = re.compile(r"^\s*(\d{1,4})\s*(min|m|h)\s*$")
_AT = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*$")
MAX_AT = 1440
MAX_LOOKBACK = 1_000_000


def parse_every(text: str | None) -> int | None:
    """Minutes between wake-ups: ``"15min"``, ``"30m"``, ``"1h"``; None for every bar."""
    if text is None:
        return None
    m = _EVERY.match(str(text)) if isinstance(text, str) else None
    if m is None or int(m.group(1)) == 0:
        raise ValueError(f"every={text!r} is not a period; write e.g. every='15min' or '1h'")
    return int(m.group(1)) * (60 if m.group(2) == "h" else 1)


def parse_at(value: str | Sequence[str] | None) -> list[int]:
    """Minutes after midnight (exchange time) of ``at="HH:MM"`` or a list of them."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    if len(items) > MAX_AT:
        raise ValueError(f"at= lists {len(items)} times; at most {MAX_AT}")
    out = []
    for item in items:
        m = _AT.match(item) if isinstance(item, str) else None
        if m is None or int(m.group(1)) > 23 or int(m.group(2)) > 59:
            raise ValueError(f"at={item!r} is not a time of day; write e.g. at='15:55'")
        out.append(int(m.group(1)) * 60 + int(m.group(2)))
    return sorted(set(out))


def check_schedule(raw: Any) -> dict[str, Any]:
    """Validate a schedule ``{every, at, timezone, lookback}`` (untrusted in the feeder)."""
    if not isinstance(raw, dict) or set(raw) != {"every", "at", "timezone", "lookback"}:
        raise ValueError("a schedule is an object with every, at, timezone and lookback")
    every, at = parse_every(raw["every"]), parse_at(raw["at"])
    tz, lookback = raw["timezone"], raw["lookback"]
    if not isinstance(tz, str) or not re.fullmatch(r"[A-Za-z_]+(/[A-Za-z0-9_+-]+){0,2}", tz):
        raise ValueError(f"timezone={tz!r} is not a time-zone name like 'America/New_York'")
    if type(lookback) is not int or not 1 <= lookback <= MAX_LOOKBACK:
        raise ValueError(f"lookback={lookback!r} must be an integer in [1, {MAX_LOOKBACK}]")
    return {"every": every, "at": at, "timezone": tz, "lookback": lookback}


def due_mask(ts: npt.NDArray[np.int64], *, every: int | None, at: Sequence[int],
             timezone: str) -> npt.NDArray[np.bool_]:
    """Which timestamps (µs UTC) wake the strategy: all of them without a schedule."""
    if every is None and not at:
        return np.ones(len(ts), dtype=bool)
    try:
        local = pl.Series("ts", ts, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")
                                                          ).dt.convert_time_zone(timezone)
    except pl.exceptions.PolarsError:
        raise ValueError(f"unknown time zone {timezone!r}; use e.g. 'America/New_York'") from None
    minute = (local.dt.hour().cast(pl.Int32) * 60 + local.dt.minute().cast(pl.Int32)).to_numpy()
    mask = np.zeros(len(ts), dtype=bool)
    if every is not None:
        mask |= minute % every == 0
    if at:
        mask |= np.isin(minute, np.asarray(at))
    return mask


def next_due(mask: npt.NDArray[np.bool_]) -> list[int]:
    """``out[t]`` = the first due index ``>= t`` (``len(mask)`` if none); length n + 1."""
    n = len(mask)
    idx = np.where(mask, np.arange(n), n)
    out = np.minimum.accumulate(idx[::-1])[::-1]
    return [*out.tolist(), n]
