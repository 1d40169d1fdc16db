"""Adjusted prices never reach back before an announcement (docs/reference-data.md).

AAPL splits 2:1 on 2024-01-16, announced 2024-01-12; the bars are unadjusted, so its
prices halve on the 16th. Two strategies size positions by the inverse of the adjusted
price (a level-dependent signal, where adjustment matters): one adjusts each bar as of its
own time (``pitwall.adjusted(bars, actions)``), the other with every split known at the
end of its data, as a researcher pre-adjusting a vendor file would. The lookahead audit
and stepped runs (the real runner fed prefixes in lock-step) tell them apart.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from test_audit import BARS, audit, full_run
from test_stepped import stepped

from pitwall.engine.decisions import decision_times
from pitwall.reference import ACTIONS_SCHEMA, adjusted

SPLIT_DAY, ANNOUNCED = dt.date(2024, 1, 16), dt.date(2024, 1, 12)


def _split(bars: pl.DataFrame) -> pl.DataFrame:
    """AAPL's bars as traded around a 2:1 split on SPLIT_DAY."""
    after = (pl.col("symbol") == "AAPL") & (
        pl.col("ts").dt.convert_time_zone("America/New_York").dt.date() >= SPLIT_DAY)
    return bars.with_columns(
        *[pl.when(after).then(pl.col(c) / 2).otherwise(pl.col(c)).alias(c)
          for c in ("open", "high", "low", "close")],
        pl.when(after).then(pl.col("volume") * 2).otherwise(pl.col("volume")).alias("volume"))


RAW = _split(BARS)
ACTIONS = pl.DataFrame({
    "security_id": ["PW-AAPL"], "symbol": ["AAPL"], "kind": ["split"],
    "announce_date": [ANNOUNCED], "effective_date": [SPLIT_DAY], "ratio": [2.0],
    "amount": [None], "new_symbol": [None]}, schema=ACTIONS_SCHEMA)

_SOURCE = '''import polars as pl
import pitwall
from pitwall.reference import ACTIONS_SCHEMA

# Dates as text: the runner's simulated clock replaces the datetime types.
ACTIONS = pl.DataFrame({{
    "security_id": ["PW-AAPL"], "symbol": ["AAPL"], "kind": ["split"],
    "announce_date": ["2024-01-12"], "effective_date": ["2024-01-16"],
    "ratio": [2.0], "amount": [None], "new_symbol": [None]}}).with_columns(
    pl.col("announce_date", "effective_date").str.to_date()).cast(ACTIONS_SCHEMA)


@pitwall.vectorized
def s(bars):
    prices = {adjust}
    return prices.select("ts", "symbol", weight=(2.0 / pl.col("close")).clip(0.0, 0.5))
'''
POINT_IN_TIME = _SOURCE.format(adjust="pitwall.adjusted(bars, ACTIONS)")
KNOWN_AT_END = _SOURCE.format(adjust="pitwall.adjusted(bars, ACTIONS, bars['ts'].max())")


def test_each_bar_is_adjusted_only_with_what_was_known_at_its_time() -> None:
    aapl = RAW.filter(pl.col("symbol") == "AAPL")
    pit = adjusted(aapl, ACTIONS)
    # A continuous series: the split's jump is gone, the pre-split bars are as traded.
    day = pl.col("ts").dt.convert_time_zone("America/New_York").dt.date()
    before = pit.filter(day < SPLIT_DAY)
    assert before.equals(aapl.filter(day < SPLIT_DAY))
    assert pit.filter(day >= SPLIT_DAY)["close"].equals(
        aapl.filter(day >= SPLIT_DAY)["close"] * 2)
    # Every prefix gives the same values: nothing later reaches an earlier bar.
    for cut in (100, 2000, aapl.height - 1):
        assert adjusted(aapl.head(cut), ACTIONS).equals(pit.head(cut))
    # As of a day: the vendor's view then. Before the announcement, nothing moves.
    vendor_before = adjusted(aapl, ACTIONS, dt.date(2024, 1, 11))
    assert vendor_before.equals(aapl)
    vendor_after = adjusted(aapl, ACTIONS, dt.datetime(2024, 1, 12, 15, tzinfo=dt.UTC))
    assert vendor_after.filter(day < SPLIT_DAY)["close"].equals(before["close"] / 2)
    assert vendor_after.filter(day < SPLIT_DAY)["volume"].equals(before["volume"] * 2)


def test_the_point_in_time_series_is_not_flagged(tmp_path: Path) -> None:
    verdict = audit(tmp_path, POINT_IN_TIME, RAW)
    assert verdict.status == "no_lookahead_found", verdict.statement


def test_prices_adjusted_with_later_splits_are_flagged(tmp_path: Path) -> None:
    verdict = audit(tmp_path, KNOWN_AT_END, RAW)
    assert verdict.status == "flagged", verdict.statement
    first = verdict.first
    assert first is not None and first.symbol == "AAPL"
    assert first.cut.date() < ANNOUNCED  # truncated before anyone knew of the split


@pytest.mark.parametrize(("source", "same"), [(POINT_IN_TIME, True), (KNOWN_AT_END, False)])
def test_stepped_runs_see_only_announced_adjustments(tmp_path: Path, source: str,
                                                     same: bool) -> None:
    plain = full_run(tmp_path, source, RAW)
    step = stepped(tmp_path, source, RAW, "daily")
    at = pl.Series(decision_times(RAW, "daily")).cast(pl.Datetime("us")).dt.replace_time_zone(
        "UTC")
    expected = plain.filter(pl.col("ts").is_in(at.implode())).sort("symbol", "ts")
    assert step.sort("symbol", "ts").equals(expected) is same
