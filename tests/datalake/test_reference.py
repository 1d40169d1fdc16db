"""Reference data in the lake: generated corporate events, versioning, the importer."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from pitwall.errors import DataError
from pitwall.reference import ACTIONS_SCHEMA, LISTINGS_SCHEMA
from pitwall_executor.cli import main
from pitwall_executor.datalake import Catalog, Snapshot, generate_dataset, sample_symbols
from pitwall_executor.datalake.reference import (
    Reference,
    commit_reference,
    import_reference,
    read_reference,
)

START, END = dt.date(2023, 1, 1), dt.date(2023, 12, 31)
SYMBOLS = sample_symbols(40)
Lake = tuple[Catalog, Snapshot]


@pytest.fixture(scope="module")
def events_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, Snapshot]:
    catalog = Catalog(tmp_path_factory.mktemp("lake"))
    snap = generate_dataset(catalog, "ev", symbols=SYMBOLS, start=START, end=END, seed=11,
                            corporate_events=True)
    return catalog, snap


def _daily(catalog: Catalog, snap: Snapshot) -> pl.DataFrame:
    """First open and last close of every (symbol, New York day)."""
    paths = [catalog.file_path(snap.dataset, f) for f in snap.files]
    day = pl.col("ts").dt.convert_time_zone("America/New_York").dt.date().alias("day")
    return (pl.scan_parquet(paths).group_by("symbol", day)
            .agg(pl.col("open").first(), pl.col("close").last()).sort("symbol", "day").collect())


def test_generated_events_are_realistic_and_match_the_bars(events_lake: Lake) -> None:
    catalog, snap = events_lake
    ref = read_reference(catalog, snap)
    daily = _daily(catalog, snap)
    kinds = ref.actions["kind"].value_counts().to_dict(as_series=False)
    counts = dict(zip(kinds["kind"], kinds["count"], strict=True))
    assert counts["dividend"] > 40 and counts["split"] >= 1 and counts.get("rename", 0) >= 1
    assert ref.listings["delisted"].sum() >= 2
    assert (ref.actions["effective_date"] >= ref.actions["announce_date"]).all()
    # Every listed period is exactly the days its symbol has bars.
    spans = daily.group_by("symbol").agg(pl.col("day").min().alias("a"),
                                         pl.col("day").max().alias("b"))
    joined = ref.listings.join(spans, on="symbol")
    assert joined.height == ref.listings.height == spans.height
    assert (joined["first_day"] == joined["a"]).all() and (joined["last_day"] == joined["b"]).all()
    # A forward split divides the open of its effective day by about its ratio.
    for row in ref.actions.filter(pl.col("kind") == "split").iter_rows(named=True):
        bars = daily.filter(pl.col("symbol") == row["symbol"])
        before = bars.filter(pl.col("day") < row["effective_date"])["close"][-1]
        on = bars.filter(pl.col("day") == row["effective_date"])["open"][0]
        assert 0.8 < (on * row["ratio"]) / before < 1.25, row
    # A dividend is priced off the last close before its ex-date.
    for row in ref.actions.filter(pl.col("kind") == "dividend").head(10).iter_rows(named=True):
        bars = daily.filter(pl.col("symbol") == row["symbol"],
                            pl.col("day") < row["effective_date"])
        assert 0.002 <= row["amount"] / bars["close"][-1] <= 0.0101


def test_weak_symbols_decline_before_they_delist(events_lake: Lake) -> None:
    catalog, snap = events_lake
    ref = read_reference(catalog, snap)
    daily = _daily(catalog, snap)
    gone = ref.listings.filter(pl.col("delisted"))
    splits = ref.actions.filter(pl.col("kind") == "split")
    for row in gone.iter_rows(named=True):
        closes = daily.filter(pl.col("symbol") == row["symbol"])["close"]
        ratio = splits.filter(pl.col("security_id") == row["security_id"],
                              pl.col("effective_date") > row["last_day"] - dt.timedelta(91))
        factor = float(ratio["ratio"].product()) if ratio.height else 1.0
        # Adjusted for a reverse split in between, the last quarter loses most of the value.
        assert closes[-1] * factor / closes[-60] < 0.6, row


def test_renamed_security_keeps_its_id_and_trades_on(events_lake: Lake) -> None:
    catalog, snap = events_lake
    ref = read_reference(catalog, snap)
    rename = ref.actions.filter(pl.col("kind") == "rename").row(0, named=True)
    periods = ref.listings.filter(pl.col("security_id") == rename["security_id"]).sort("first_day")
    assert periods["symbol"].to_list() == [rename["symbol"], rename["new_symbol"]]
    assert periods["first_day"][1] == rename["effective_date"]
    assert not periods["delisted"][0]
    assert rename["new_symbol"] in snap.symbols and rename["symbol"] in snap.symbols


def test_generation_is_deterministic_and_pins_reference_data(events_lake: Lake,
                                                             tmp_path: Path) -> None:
    catalog, snap = events_lake
    again = generate_dataset(Catalog(tmp_path), "ev", symbols=SYMBOLS, start=START, end=END,
                             seed=11, corporate_events=True)
    assert again.content_digest == snap.content_digest
    assert again.reference == snap.reference
    # Same bars, other reference data: another digest.
    ref = read_reference(catalog, snap)
    fewer = Reference(ref.listings, ref.actions.filter(pl.col("kind") != "dividend"))
    changed = commit_reference(Catalog(tmp_path), "ev", fewer, message="no dividends")
    assert changed.files == again.files
    assert changed.content_digest != again.content_digest
    # The older version still reads its own tables.
    assert read_reference(Catalog(tmp_path), again).actions.height == ref.actions.height


def test_bars_only_datasets_are_unchanged_by_the_option(tmp_path: Path) -> None:
    plain = generate_dataset(Catalog(tmp_path), "p", symbols=SYMBOLS[:3], start=START,
                             end=dt.date(2023, 1, 31), seed=7)
    assert plain.reference == {}
    assert "corporate_events" not in plain.properties["generator"]
    assert read_reference(Catalog(tmp_path), plain).is_empty
    # A bars-only digest is the sha of its files, as before reference data existed.
    assert plain.to_json().get("reference") is None


def test_a_bars_commit_carries_the_reference_forward(events_lake: Lake, tmp_path: Path) -> None:
    _, snap = events_lake
    catalog = Catalog(tmp_path)
    first = generate_dataset(catalog, "ev", symbols=SYMBOLS, start=START, end=END, seed=11,
                             corporate_events=True)
    second = catalog.commit("ev", first.files, message="a correction")
    assert second.reference == first.reference == snap.reference
    assert Snapshot.from_json(second.to_json()).reference == second.reference


def _write(path: Path, rows: list[dict[str, str]], schema: pl.Schema) -> Path:
    pl.DataFrame(rows, schema={c: pl.String for c in schema}).write_csv(path)
    return path


LISTING = {"security_id": "S1", "symbol": "AAPL", "first_day": "2024-02-01",
           "last_day": "2024-04-30", "delisted": "false"}
SPLIT = {"security_id": "S1", "symbol": "AAPL", "kind": "split", "announce_date": "2024-02-20",
         "effective_date": "2024-03-04", "ratio": "2", "amount": "", "new_symbol": ""}


def test_import_commits_clean_files(lake: Lake, tmp_path: Path) -> None:
    catalog, _ = lake
    listings = _write(tmp_path / "l.csv", [LISTING], LISTINGS_SCHEMA)
    actions = _write(tmp_path / "a.csv", [SPLIT, {**SPLIT, "kind": "dividend", "ratio": "",
                                                  "amount": "0.24"}], ACTIONS_SCHEMA)
    local = Catalog(tmp_path / "lake")
    base = catalog.snapshot("sample")
    for entry in base.files:
        target = local.file_path("sample", entry)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(catalog.file_path("sample", entry).read_bytes())
    local.commit("sample", base.files, message="copy")
    snap = import_reference(local, "sample", listings=listings, actions=actions, fmt="csv")
    ref = read_reference(local, snap)
    assert ref.listings["symbol"].to_list() == ["AAPL"]
    assert sorted(ref.actions["kind"]) == ["dividend", "split"]
    assert snap.files == base.files and snap.version == 2


@pytest.mark.parametrize(("change", "message"), [
    ({"symbol": "APPL"},
     "symbol 'APPL' of security 'S1' is not in the listings; did you mean 'AAPL'?"),
    ({"effective_date": "2024-02-01"}, "is before announce_date 2024-02-20"),
    ({"ratio": "-2"}, "ratio -2.0 must be a positive number"),
    ({"kind": "merger"}, "kind must be one of split, dividend, rename"),
    ({"announce_date": "20/02/2024"}, "announce_date '20/02/2024' is not a Date"),
    ({"kind": "rename", "ratio": ""}, "new_symbol must name the symbol"),
    ({"security_id": "S9"}, "symbol 'AAPL' is listed as security 'S1', not 'S9'"),
])
def test_import_refuses_bad_actions_with_a_clear_error(
        lake: Lake, tmp_path: Path, change: dict[str, str], message: str) -> None:
    catalog, _ = lake
    listings = _write(tmp_path / "l.csv", [LISTING], LISTINGS_SCHEMA)
    actions = _write(tmp_path / "a.csv", [{**SPLIT, **change}], ACTIONS_SCHEMA)
    before = len(catalog.versions("sample"))
    with pytest.raises(DataError) as info:
        import_reference(catalog, "sample", listings=listings, actions=actions, fmt="csv")
    assert message in str(info.value)
    assert len(catalog.versions("sample")) == before  # nothing committed


def test_import_refuses_listings_of_symbols_without_bars(lake: Lake, tmp_path: Path) -> None:
    catalog, _ = lake
    listings = _write(tmp_path / "l.csv", [{**LISTING, "symbol": "ZZZZ"}], LISTINGS_SCHEMA)
    with pytest.raises(DataError, match="1 symbol\\(s\\) without bars in sample@v1: ZZZZ"):
        import_reference(catalog, "sample", listings=listings, actions=None, fmt="csv")


def test_cli_generates_and_imports_reference_data(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PITWALL_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    out = runner.invoke(main, ["data", "generate", "--dataset", "ev", "--symbols", "5",
                               "--start", "2023-01-02", "--end", "2023-02-28",
                               "--corporate-events"])
    assert out.exit_code == 0, out.output
    assert "reference data: " in out.output and " listings" in out.output
    listings = _write(tmp_path / "l.csv", [{**LISTING, "last_day": "2023-01-01"}],
                      LISTINGS_SCHEMA)
    out = runner.invoke(main, ["data", "import-reference", "--dataset", "ev", "--format", "csv",
                               "--listings", str(listings)])
    assert out.exit_code == 1
    assert "first_day 2024-02-01 is after last_day 2023-01-01" in out.output
