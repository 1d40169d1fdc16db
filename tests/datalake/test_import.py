"""Importing real vendor bars (backtesting.py's GOOG daily and EURUSD hourly) and bad rows."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
from backtesting.test import EURUSD, GOOG
from click.testing import CliRunner

from pitwall.errors import DataError
from pitwall_executor.cli import main
from pitwall_executor.datalake import Catalog, load_bars
from pitwall_executor.datalake.importer import import_bars, parse_mapping

MAP = "ts=Date,open=Open,high=High,low=Low,close=Close,volume=Volume"
NY = "America/New_York"


@pytest.fixture(scope="module")
def goog_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vendor") / "goog.csv"
    GOOG.to_csv(path, index_label="Date")
    return path


def test_goog_daily_imports_every_row_in_utc(goog_csv: Path, tmp_path: Path) -> None:
    result = import_bars(goog_csv, fmt="csv", mapping=parse_mapping(MAP), tz=NY, symbol="GOOG")
    assert result.rows_read == len(GOOG) == 2148
    assert result.bars.height == 2148 and result.rejects.is_empty()
    first = result.bars.row(0, named=True)
    # 2004-08-19 00:00 in New York (EDT, UTC-4) is 04:00 UTC.
    assert first["ts"] == dt.datetime(2004, 8, 19, 4, tzinfo=dt.UTC)
    assert (first["open"], first["close"], first["volume"]) == (100.0, 100.34, 22351900)
    # Mid-week market holidays are reported as gaps (e.g. Thanksgiving 2004), never weekends.
    gaps = result.gaps
    assert gaps.height > 0
    assert dt.datetime(2004, 11, 26, 5, tzinfo=dt.UTC) in gaps["before"].to_list()
    assert (gaps["before"].dt.convert_time_zone(NY).dt.weekday() < 6).all()


def test_eurusd_hourly_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "eurusd.parquet"
    pl.from_pandas(EURUSD.reset_index(names="Time")).write_parquet(path)
    runner = CliRunner()
    out = runner.invoke(main, ["data", "import", str(path), "--dataset", "fx", "--format",
                               "parquet", "--map", MAP.replace("Date", "Time"), "--tz", "UTC",
                               "--symbol", "EURUSD"], env={"PITWALL_DATA_DIR": str(tmp_path)})
    assert out.exit_code == 0, out.output
    assert "read 5000, imported 5000, rejected 0" in out.output
    catalog = Catalog(tmp_path / "lake")
    snap = catalog.snapshot("fx")
    assert snap.rows == 5000 and snap.symbols == {"EURUSD"}
    bars = load_bars(catalog, snap, ["EURUSD"], dt.date(2017, 1, 1), dt.date(2019, 1, 1))
    assert bars.height == 5000 and bars["close"][0] == EURUSD["Close"].iloc[0]


BAD_ROWS = {
    "not-a-date": "unparseable timestamp",
    "high_below_low": "high below low",
    "high_below_close": "high below open or close",
    "low_above_open": "low above open or close",
    "negative_volume": "negative volume",
    "zero_price": "non-positive price",
    "missing_close": "missing or unparseable close",
    "duplicate": "duplicate of line",
    "backwards": "timestamp goes backwards",
    "dst_gap": "local time does not exist or is ambiguous in America/New_York",
}


def _bad_file(goog_csv: Path, tmp_path: Path) -> Path:
    lines = goog_csv.read_text().splitlines()
    header, rows = lines[0], lines[1:11]
    bad = [
        "not-a-date,1,2,0.5,1.5,10",
        "2013-03-05,10,9,11,10,100",  # high 9 < low 11
        "2013-03-06,10,11,9,12,100",  # close above high
        "2013-03-07,10,11,10.5,10.8,100",  # low above open
        "2013-03-08,10,11,9,10,-5",
        "2013-03-11,0,11,9,10,100",
        "2013-03-12,10,11,9,,100",
        rows[3],  # an exact duplicate of an earlier bar
        "2004-08-20 12:00:00,101,109,100,108,1000",  # earlier than the bar before it
        "2013-03-10 02:30:00,10,11,9,10,100",  # 02:30 did not exist in New York that day
    ]
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([header, *rows, *bad]) + "\n")
    return path


def test_every_bad_row_is_reported_with_its_reason(goog_csv: Path, tmp_path: Path) -> None:
    path = _bad_file(goog_csv, tmp_path)
    result = import_bars(path, fmt="csv", mapping=parse_mapping(MAP), tz=NY, symbol="GOOG")
    assert result.rows_read == 20
    assert result.bars.height == 10 and result.rejects.height == 10  # nothing dropped silently
    reasons = dict(zip(result.rejects["line"], result.rejects["reason"], strict=True))
    for line, expected in zip(range(12, 22), BAD_ROWS.values(), strict=True):
        assert expected in reasons[line], (line, reasons[line])
    assert result.rejects["Date"].to_list()[0] == "not-a-date"  # raw text kept
    summary = result.summary()
    assert summary["rejected"] == 10 and summary["imported"] == 10


def test_cli_writes_rejects_and_summary(goog_csv: Path, tmp_path: Path) -> None:
    path = _bad_file(goog_csv, tmp_path)
    out = CliRunner().invoke(main, ["data", "import", str(path), "--dataset", "goog",
                                    "--format", "csv", "--map", MAP, "--tz", NY, "--symbol",
                                    "GOOG"], env={"PITWALL_DATA_DIR": str(tmp_path)})
    assert out.exit_code == 0, out.output
    assert "imported 10, rejected 10" in out.output
    rejects = pl.read_csv(tmp_path / "bad.csv.rejects.csv", infer_schema=False)
    assert rejects.height == 10 and "reason" in rejects.columns
    summary = json.loads((tmp_path / "bad.csv.rejects.summary.json").read_text())
    assert summary["reject_reasons"]["negative volume"] == 1


def test_adjustment_factors_back_adjust_prices_and_volume(goog_csv: Path, tmp_path: Path) -> None:
    factors = tmp_path / "factors.csv"
    factors.write_text("date,factor\n2010-01-04,0.5\n2012-01-03,0.5\n")
    result = import_bars(goog_csv, fmt="csv", mapping=parse_mapping(MAP), tz=NY, symbol="GOOG",
                         adjust_factors=factors)
    raw = import_bars(goog_csv, fmt="csv", mapping=parse_mapping(MAP), tz=NY, symbol="GOOG")
    ratio = (result.bars["close"] / raw.bars["close"]).to_list()
    days = raw.bars["ts"].dt.convert_time_zone(NY).dt.date().to_list()
    for day, r in zip(days, ratio, strict=True):
        want = 0.25 if day < dt.date(2010, 1, 4) else 0.5 if day < dt.date(2012, 1, 3) else 1.0
        assert r == pytest.approx(want, rel=1e-6)
    assert result.bars["volume"][0] == raw.bars["volume"][0] * 4


def test_a_bad_mapping_says_what_to_write(goog_csv: Path) -> None:
    with pytest.raises(DataError, match="pitwall_column=VendorColumn"):
        parse_mapping("time=Date")
    with pytest.raises(DataError, match=r"missing \['volume'\]"):
        import_bars(goog_csv, fmt="csv", mapping=parse_mapping(MAP.rsplit(",", 1)[0]), tz=NY,
                    symbol="GOOG")
