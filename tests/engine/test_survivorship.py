"""Survivorship bias, measured: a universe rule over a generated market where weak symbols
decline and delist, against the same rule over today's survivors (docs/reference-data.md).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from pitwall.engine import run_vectorized
from pitwall.engine.corporate import CorporateActions, relabel, relabel_actions
from pitwall.engine.validate import validate_weights
from pitwall.models import Costs
from pitwall.universe import UniverseReport, UniverseRule, evaluate, membership
from pitwall_executor.datalake import Catalog, generate_dataset, sample_symbols
from pitwall_executor.datalake.reference import read_reference

RULE = "dollar_volume_20d > 1e7 at month_start"


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, CorporateActions]:
    """Daily bars (one per session, unadjusted) of a generated market, and its actions."""
    catalog = Catalog(tmp_path_factory.mktemp("lake"))
    snap = generate_dataset(catalog, "m", symbols=sample_symbols(50), start=dt.date(2022, 1, 1),
                            end=dt.date(2023, 12, 31), seed=5, corporate_events=True)
    ref = read_reference(catalog, snap)
    day = pl.col("ts").dt.convert_time_zone("America/New_York").dt.date()
    minutes = pl.scan_parquet([catalog.file_path("m", f) for f in snap.files])
    daily = (minutes.group_by("symbol", day.alias("day"))
             .agg(pl.col("ts").max(), pl.col("open").first(), pl.col("close").last(),
                  pl.col("volume").sum())
             .drop("day").sort("symbol", "ts").collect())
    return daily, CorporateActions(ref.actions, ref.listings)


def equal_weight(bars: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """1/n in each member from the evaluation on (the decision at that session's close)."""
    counts = members.group_by("day").len()
    flags = bars.with_columns(membership(bars, members))
    day = pl.col("ts").dt.convert_time_zone("America/New_York").dt.date().alias("_day")
    keyed = flags.with_columns(day).sort("_day").join_asof(
        counts.sort("day").rename({"day": "eval"}), left_on="_day", right_on="eval",
        strategy="backward")
    weights = keyed.select("ts", "symbol", weight=pl.when(pl.col("member"))
                           .then(1.0 / pl.col("len")).otherwise(0.0))
    return validate_weights(weights.sort("symbol", "ts"), bars, bars["symbol"].unique())


def test_the_rule_parser_is_declarative_and_says_what_to_write() -> None:
    rule = UniverseRule.parse("dollar_volume_20d > 1e6 and price >= 5 at week_start")
    assert rule.schedule == "week_start"
    assert [(c.column, c.op, c.value) for c in rule.conditions] == [
        ("dollar_volume_20d", ">", 1e6), ("price", ">=", 5.0)]
    assert UniverseRule.parse("price > 1").schedule == "month_start"
    for bad in ("__import__('os') > 1", "price > five", "price => 1", "price > 1 at noon",
                "dollar_volume_0d > 1"):
        with pytest.raises(ValueError, match="universe rule"):
            UniverseRule.parse(bad)


def test_a_rule_is_evaluated_on_the_sessions_before_each_evaluation() -> None:
    ts = [dt.datetime(2024, 1, d, 20, tzinfo=dt.UTC) for d in (29, 30, 31)] + [
        dt.datetime(2024, 2, 1, 20, tzinfo=dt.UTC)]
    bars = pl.DataFrame({"ts": ts * 2, "symbol": ["A"] * 4 + ["B"] * 4,
                         "close": [10.0, 10.0, 10.0, 99.0, 10.0, 10.0, 2.0, 2.0],
                         "volume": [100.0] * 8})
    members = evaluate("price > 5 at month_start", bars)
    # On 1 Feb only January's last close counts: B fell to 2 on the 31st, A's 99 is not known.
    assert members.filter(pl.col("day") == dt.date(2024, 2, 1))["symbol"].to_list() == ["A"]
    # A symbol that did not trade the session before is not listed.
    gone = bars.filter(~((pl.col("symbol") == "A") & (pl.col("ts") == ts[2])))
    assert evaluate("price > 1", gone).filter(pl.col("day") == dt.date(2024, 2, 1))[
        "symbol"].to_list() == ["B"]


def test_survivors_flatter_the_rule_and_the_report_counts_the_turnover(
        market: tuple[pl.DataFrame, CorporateActions]) -> None:
    daily, corporate = market
    keyed = relabel_actions(corporate)
    bars = relabel(daily, corporate)  # one row per security, named by its latest symbol
    members = evaluate(RULE, bars, keyed.listings)
    gone = set(keyed.listings.filter(pl.col("delisted"))["symbol"])
    assert gone & set(members["symbol"]), "some members must later delist"
    survivors = members.filter(~pl.col("symbol").is_in(sorted(gone)))

    def total_return(universe: pl.DataFrame) -> float:
        result = run_vectorized(daily, equal_weight(bars, universe), capital=1e6,
                                costs=Costs(commission_bps=1.0), corporate=corporate)
        return result.final_equity / 1e6 - 1

    point_in_time, biased = total_return(members), total_return(survivors)
    print(f"rule {RULE!r}: point in time {point_in_time:+.1%}, survivors {biased:+.1%}")
    assert point_in_time < biased - 0.05, (point_in_time, biased)
    report = UniverseReport.of(members)
    # 24 month starts; on the first, no symbol has 20 sessions of history yet.
    assert report.evaluations == 23
    assert report.entered > 0  # listings after the start joined when they qualified
    assert report.left >= len(gone & set(members["symbol"]))
    assert UniverseReport.of(survivors).left < report.left


def test_delisted_members_are_closed_and_reported(
        market: tuple[pl.DataFrame, CorporateActions]) -> None:
    daily, corporate = market
    bars = relabel(daily, corporate)
    members = evaluate(RULE, bars, relabel_actions(corporate).listings)
    result = run_vectorized(daily, equal_weight(bars, members), capital=1e6, costs=Costs(),
                            corporate=corporate)
    assert result.corporate is not None
    delisted = result.corporate.delisted
    assert delisted.height >= 1
    assert (delisted["proceeds"] > 0).all()  # long members sold at their last close
    assert result.corporate.dividends > 0 and result.corporate.dividend_cash > 0
    assert result.corporate.renames >= 1


def test_membership_spans_until_the_next_evaluation(tmp_path: Path) -> None:
    ts = [dt.datetime(2024, 1, d, 20, tzinfo=dt.UTC) for d in (30, 31)] + [
        dt.datetime(2024, 2, d, 20, tzinfo=dt.UTC) for d in (1, 2)]
    bars = pl.DataFrame({"ts": ts, "symbol": ["A"] * 4, "close": [1.0] * 4,
                         "volume": [1.0] * 4})
    members = pl.DataFrame({"day": [dt.date(2024, 2, 1)], "symbol": ["A"]})
    assert membership(bars, members).to_list() == [False, False, True, True]
