"""Days, actions and listings for the hand-computed corporate-action tests of both
engines (test_corporate.py, test_event_corporate.py): one bar a day at 15:00 UTC (10:00
in New York), capital 1,000."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

from pitwall.engine.corporate import CorporateActions
from pitwall.reference import ACTIONS_SCHEMA, LISTINGS_SCHEMA

DAYS = [dt.date(2024, 1, d) for d in (2, 3, 4, 5, 8)]
CAPITAL = 1000.0


def ts(day: int) -> dt.datetime:
    """The bar time of day ``day`` (1-based)."""
    d = DAYS[day - 1]
    return dt.datetime(d.year, d.month, d.day, 15, tzinfo=dt.UTC)


def action(symbol: str, kind: str, day: int, *, announce: int | None = None,
           ratio: float | None = None, amount: float | None = None,
           new_symbol: str | None = None) -> dict[str, object]:
    """One action effective on day ``day``, announced on day ``announce`` (default: ten
    days before the first day)."""
    told = DAYS[announce - 1] if announce else DAYS[0] - dt.timedelta(days=10)
    return {"security_id": f"id-{symbol}", "symbol": symbol, "kind": kind,
            "announce_date": told, "effective_date": DAYS[day - 1], "ratio": ratio,
            "amount": amount, "new_symbol": new_symbol}


def corporate(*acts: dict[str, object],
              listings: Sequence[tuple[str, str, int, int, bool]] = ()) -> CorporateActions:
    """The actions, and listings as ``(security_id, symbol, first day, last day,
    delisted)``."""
    rows = [(sid, sym, DAYS[a - 1], DAYS[b - 1], gone) for sid, sym, a, b, gone in listings]
    return CorporateActions(pl.DataFrame(list(acts), schema=ACTIONS_SCHEMA),
                            pl.DataFrame(rows, schema=LISTINGS_SCHEMA, orient="row"))
