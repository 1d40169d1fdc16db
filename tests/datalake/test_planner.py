from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from pitwall.errors import EmptyRangeError, UnknownSymbolError
from pitwall_executor.datalake import (
    BARS_SCHEMA,
    Catalog,
    Snapshot,
    generate_bars,
    load_bars,
    plan,
    trading_minutes,
    validate_request,
)

Lake = tuple[Catalog, Snapshot]
D = dt.date


def test_the_lake_has_one_file_per_month(lake: Lake) -> None:
    _, snapshot = lake
    assert snapshot.label == "sample@v1"
    assert [f.min_ts.month for f in snapshot.files] == [2, 3, 4]
    assert len(snapshot.symbols) == 20
    assert snapshot.first_ts == dt.datetime(2024, 2, 1, 14, 30, tzinfo=dt.UTC)
    assert snapshot.last_ts == dt.datetime(2024, 4, 30, 19, 59, tzinfo=dt.UTC)


def test_a_one_month_query_touches_one_file(lake: Lake) -> None:
    _, snapshot = lake
    march = plan(snapshot, ["AAPL"], D(2024, 3, 1), D(2024, 3, 31))
    assert march == [snapshot.files[1]]
    spanning = plan(snapshot, ["AAPL"], D(2024, 2, 28), D(2024, 3, 1))
    assert spanning == list(snapshot.files[:2])
    assert plan(snapshot, ["AAPL"], D(2024, 1, 1), D(2024, 12, 31)) == list(snapshot.files)
    assert validate_request(snapshot, ["AAPL"], D(2024, 3, 1), D(2024, 3, 31)) == march


def test_files_without_the_requested_symbols_are_pruned(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    jan = next(generate_bars(["AAPL"], D(2024, 1, 2), D(2024, 1, 31), seed=1))
    feb = next(generate_bars(["MSFT"], D(2024, 2, 1), D(2024, 2, 29), seed=1))
    files = [catalog.write_file("mixed", jan), catalog.write_file("mixed", feb)]
    snapshot = catalog.commit("mixed", files, message="two symbols, two months")
    assert plan(snapshot, ["MSFT"], D(2024, 1, 1), D(2024, 2, 29)) == [files[1]]
    assert plan(snapshot, ["AAPL", "MSFT"], D(2024, 1, 1), D(2024, 2, 29)) == files


def test_load_bars_returns_exactly_the_requested_bars(lake: Lake) -> None:
    catalog, snapshot = lake
    start, end = D(2024, 3, 8), D(2024, 3, 12)  # Fri, (weekend), Mon, Tue across the DST change
    got = load_bars(catalog, snapshot, ["MSFT", "AAPL"], start, end)
    assert got.schema == BARS_SCHEMA
    assert got.equals(got.sort("symbol", "ts"))
    assert got.height == 2 * trading_minutes(start, end)
    assert got["symbol"].unique().sort().to_list() == ["AAPL", "MSFT"]
    assert sorted(got["ts"].dt.date().unique()) == [D(2024, 3, 8), D(2024, 3, 11), D(2024, 3, 12)]
    # The same bars as the generator makes, so nothing was lost or altered on the way.
    params = snapshot.properties["generator"]
    generated = pl.concat(
        generate_bars(params["symbols"], D(2024, 2, 1), D(2024, 3, 31), seed=params["seed"])
    )
    expected = generated.filter(
        pl.col("symbol").is_in(["AAPL", "MSFT"]), pl.col("ts").dt.date().is_between(start, end)
    )
    assert got.equals(expected)


def test_load_bars_sorts_files_that_overlap_in_time(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)

    def bars(symbol: str, first: int, last: int) -> pl.DataFrame:
        return next(generate_bars([symbol], D(2024, 1, first), D(2024, 1, last), seed=1))

    # An import that patched in AAPL's Jan 3 after the month was written: the files overlap.
    month = pl.concat([bars("AAPL", 4, 5), bars("MSFT", 2, 5)])
    files = [
        catalog.write_file("patched", month),
        catalog.write_file("patched", bars("AAPL", 3, 3)),
    ]
    snapshot = catalog.commit("patched", files, message="overlapping files")
    got = load_bars(catalog, snapshot, ["AAPL", "MSFT"], D(2024, 1, 1), D(2024, 1, 31))
    assert got.height == trading_minutes(D(2024, 1, 3), D(2024, 1, 5)) + trading_minutes(
        D(2024, 1, 2), D(2024, 1, 5))  # AAPL from the 3rd, MSFT from the 2nd
    assert got.equals(got.sort("symbol", "ts"))


def test_load_bars_projects_columns(lake: Lake) -> None:
    catalog, snapshot = lake
    got = load_bars(catalog, snapshot, ["AAPL"], D(2024, 4, 1), D(2024, 4, 1), columns=["close"])
    assert got.columns == ["ts", "symbol", "close"]
    assert got.height == trading_minutes(D(2024, 4, 1), D(2024, 4, 1))
    with pytest.raises(ValueError, match="unknown columns"):
        load_bars(catalog, snapshot, ["AAPL"], D(2024, 4, 1), D(2024, 4, 1), columns=["vwap"])


def test_load_bars_reads_only_the_planned_files(lake: Lake, tmp_path: Path) -> None:
    catalog, snapshot = lake
    copy = Catalog(tmp_path / "lake")
    shutil.copytree(catalog.root, copy.root)
    for entry in (snapshot.files[0], snapshot.files[2]):  # February and April
        copy.file_path("sample", entry).unlink()
    got = load_bars(copy, snapshot, ["AAPL"], D(2024, 3, 1), D(2024, 3, 31))
    assert got.height == trading_minutes(D(2024, 3, 1), D(2024, 3, 31))  # Good Friday closed
    with pytest.raises(FileNotFoundError):
        load_bars(copy, snapshot, ["AAPL"], D(2024, 4, 1), D(2024, 4, 2))


def test_an_unknown_symbol_is_named_with_a_suggestion(lake: Lake) -> None:
    _, snapshot = lake
    with pytest.raises(UnknownSymbolError) as info:
        validate_request(snapshot, ["MSFT", "APPL"], D(2024, 3, 1), D(2024, 3, 5))
    first_ten = ", ".join(sorted(snapshot.symbols)[:10])
    assert str(info.value) == (
        "symbol 'APPL' is not in dataset sample@v1; did you mean 'AAPL'? "
        f"It holds 20 symbols: {first_ten}, … (first 10)"
    )
    with pytest.raises(UnknownSymbolError, match=r"symbols 'APPL', 'ZZZZZZ' are not in"):
        validate_request(snapshot, ["APPL", "ZZZZZZ"], D(2024, 3, 1), D(2024, 3, 5))
    with pytest.raises(UnknownSymbolError, match="universe is empty"):
        validate_request(snapshot, [], D(2024, 3, 1), D(2024, 3, 5))


@pytest.mark.parametrize(
    ("start", "end", "closed"),
    [
        (D(2023, 1, 1), D(2024, 1, 31), False),  # ends before the first bar
        (D(2024, 5, 1), D(2024, 6, 30), False),  # starts after the last bar
        (D(2024, 3, 9), D(2024, 3, 10), True),  # a weekend inside the data
        (D(2024, 3, 29), D(2024, 3, 29), True),  # Good Friday, a market holiday
    ],
)
def test_a_range_without_bars_names_the_data_range(lake: Lake, start: D, end: D,
                                                   closed: bool) -> None:
    catalog, snapshot = lake
    message = (
        f"no bars between {start} and {end} in dataset sample@v1: its data runs from "
        "2024-02-01 to 2024-04-30 (UTC)"
    )
    with pytest.raises(EmptyRangeError, match=re.escape(message)) as raised:
        validate_request(snapshot, ["AAPL"], start, end)
    assert ("The NYSE held no session in that range" in str(raised.value)) is closed
    with pytest.raises(EmptyRangeError, match=re.escape(message)):
        load_bars(catalog, snapshot, ["AAPL"], start, end)


def test_end_before_start_is_refused(lake: Lake) -> None:
    _, snapshot = lake
    with pytest.raises(EmptyRangeError, match="swap them"):
        validate_request(snapshot, ["AAPL"], D(2024, 3, 5), D(2024, 3, 1))
