"""``GET /v1/datasets/{dataset}/bars`` and ``pitwall.Client.bars`` against a live API: the
answer is the slice a job reads (``execution/attempt.py: load_slice``), of the version
asked for, and every bad request is a 4xx that says what to change."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import polars as pl
import pytest
import requests
from apikit import SYMBOLS, Api, StartApi, make_lake, start_api

from pitwall.models import BacktestSpec
from pitwall.notebook.client import ApiError, Client
from pitwall_executor.api.bars import PARQUET, BarsHandler
from pitwall_executor.datalake.catalog import Catalog
from pitwall_executor.datalake.ingest import upsert
from pitwall_executor.execution.attempt import load_slice

START, END = dt.date(2024, 3, 4), dt.date(2024, 3, 8)
QUERY = {"symbols": "AAPL,MSFT", "start": str(START), "end": str(END)}


def _slice(api: Api, version: int | None = None) -> pl.DataFrame:
    spec = BacktestSpec(dataset="sample", universe=["AAPL", "MSFT"], start=START, end=END,
                        version=version)
    return load_slice(api.stack, spec)[0]


def _error(resp: requests.Response) -> tuple[int, str, list[str], str]:
    body = resp.json()
    return resp.status_code, body["error"], [f["field"] for f in body["fields"]], body["message"]


@pytest.fixture
def sqlite_api(live_api: StartApi) -> Api:
    return live_api()


def test_the_bars_are_the_slice_a_job_reads(sqlite_api: Api) -> None:
    api = sqlite_api
    resp = api.get("/v1/datasets/sample/bars", params=QUERY)
    assert resp.status_code == 200, resp.text
    assert resp.headers["Content-Type"] == PARQUET
    frame = pl.read_parquet(io.BytesIO(resp.content))
    expected = _slice(api)
    assert frame.height == expected.height > 0
    assert frame.equals(expected)  # same rows, order, columns and dtypes
    assert frame.columns == ["ts", "symbol", "open", "high", "low", "close", "volume"]
    assert frame.schema["ts"] == pl.Datetime("us", "UTC")
    assert sorted(frame["symbol"].unique()) == ["AAPL", "MSFT"]
    assert frame["ts"].min().date() >= START and frame["ts"].max().date() <= END
    snapshot = api.stack.catalog.snapshot("sample")
    assert resp.headers["Pitwall-Data-Version"] == str(snapshot.version)
    assert resp.headers["Pitwall-Data-Digest"] == snapshot.content_digest
    with Client(api.url, api.tokens["bob"]) as client:  # any researcher may read the data
        bars = client.bars("sample", ["AAPL", "MSFT"], START, END)
        assert bars.equals(expected) and client.last_bars_version == snapshot.version
        assert client.bars("sample", "MSFT", str(START), str(START)).equals(
            expected.filter(pl.col("symbol") == "MSFT", pl.col("ts").dt.date() == START))


def test_a_version_is_read_as_pinned(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    lake = make_lake(tmp_path / "lake")  # a lake of its own: this test commits a version
    catalog = Catalog(lake)
    v1 = catalog.snapshot("sample")
    old = pl.read_parquet([catalog.file_path("sample", f) for f in v1.files])
    day = (pl.col("symbol") == "AAPL") & (pl.col("ts").dt.date() == START)
    upsert(catalog, "sample", old.filter(day).with_columns(pl.col("close") * 1.05),
           message="AAPL corrected")
    api = start_api(tmp_path, lake, f"sqlite:///{tmp_path}/pitwall.db")
    try:
        with Client(api.url, api.tokens["alice"]) as client:
            latest = client.bars("sample", "AAPL,MSFT", START, END)
            assert client.last_bars_version == 2
            pinned = client.bars("sample", "AAPL,MSFT", START, END, version=1)
            assert client.last_bars_version == 1
        assert latest.equals(_slice(api, 2)) and pinned.equals(_slice(api, 1))
        assert not latest.equals(pinned)
        changed = latest.join(pinned, on=["ts", "symbol"], suffix="_v1").filter(
            pl.col("close") != pl.col("close_v1"))
        assert changed.height > 0 and set(changed["symbol"]) == {"AAPL"}
    finally:
        api.server.stop()
        api.stack.store.close()


@pytest.mark.parametrize(("path", "query", "status", "field", "says"), [
    ("nope", QUERY, 404, None, "does not exist"),
    ("sample", {**QUERY, "version": "9"}, 404, None, "has no version 9"),
    ("sample", {**QUERY, "symbols": "AAPL,ZZZZ"}, 400, "symbols", "ZZZZ"),
    ("sample", {**QUERY, "start": "0001-01-01"}, 400, "start", "outside the dates"),
    ("sample", {**QUERY, "start": "2024-03-08", "end": "2024-03-04"}, 400, "query",
     "before start"),
    ("sample", {**QUERY, "start": "2023-01-02", "end": "2023-01-06"}, 400, "start",
     "2023-01-02"),
    ("sample", {**QUERY, "start": "yesterday"}, 400, "start", "date"),
    ("sample", {**QUERY, "version": "x"}, 400, "version", "integer"),
    ("sample", {"start": QUERY["start"], "end": QUERY["end"]}, 400, "symbols", "missing"),
])
def test_bad_requests_are_4xx_naming_what_to_change(
        sqlite_api: Api, path: str, query: dict[str, str], status: int, field: str | None,
        says: str) -> None:
    resp = sqlite_api.get(f"/v1/datasets/{path}/bars", params=query)
    code, _error_code, fields, message = _error(resp)
    assert code == status, resp.text
    assert says in message, message
    if field is not None:
        assert field in fields, resp.text


def test_the_bars_need_a_token(sqlite_api: Api) -> None:
    resp = requests.get(sqlite_api.url + "/v1/datasets/sample/bars", params=QUERY, timeout=10)
    assert resp.status_code == 401 and resp.json()["error"] == "unauthorized"
    with Client(sqlite_api.url, "not-a-token") as client, pytest.raises(ApiError) as err:
        client.bars("sample", SYMBOLS, START, END)
    assert err.value.status == 401


def test_an_oversized_request_says_to_narrow_the_range(
        sqlite_api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _slice(sqlite_api).height
    monkeypatch.setattr(BarsHandler, "max_rows", rows - 1)  # the real limit is 5 million
    resp = sqlite_api.get("/v1/datasets/sample/bars", params=QUERY)
    code, error, fields, message = _error(resp)
    assert (code, error, fields) == (400, "too_many_rows", ["end"]), resp.text
    assert "Narrow the range" in message and f"{rows - 1:,}" in message
    with Client(sqlite_api.url, sqlite_api.tokens["alice"]) as client:
        with pytest.raises(ApiError, match="Narrow the range") as err:
            client.bars("sample", "AAPL,MSFT", START, END)
        assert err.value.status == 400
        monkeypatch.setattr(BarsHandler, "max_rows", rows)  # exactly at the limit: served
        assert client.bars("sample", "AAPL,MSFT", START, END).height == rows


def test_a_quick_run_on_reference_data_applies_the_jobs_corporate_actions(
        tmp_path: Path) -> None:
    import pitwall
    from pitwall.engine import run_vectorized
    from pitwall.engine.validate import validate_weights
    from pitwall.models import Costs
    from pitwall_executor.datalake import generate_dataset
    from pitwall_executor.datalake.reference import read_reference
    from pitwall_executor.execution.attempt import with_reference

    lake = tmp_path / "lake"
    lake.mkdir()
    lake.chmod(0o755)
    catalog = Catalog(lake)
    generate_dataset(catalog, "ev", symbols=["AAPL", "MSFT", "GOOG", "AMZN"],
                     start=dt.date(2024, 1, 1), end=dt.date(2024, 3, 31), seed=11,
                     corporate_events=True)
    reference = read_reference(catalog, catalog.snapshot("ev"))
    dividend = reference.actions.filter(pl.col("kind") == "dividend").row(0, named=True)
    symbol, ex_day = dividend["symbol"], dividend["effective_date"]
    start, end = ex_day - dt.timedelta(days=6), ex_day + dt.timedelta(days=3)
    api = start_api(tmp_path, lake, f"sqlite:///{tmp_path}/pitwall.db")
    try:
        with Client(api.url, api.tokens["bob"]) as client:
            bars = client.bars("ev", [symbol], start, end)
            corporate = client.reference("ev", client.last_bars_version)
            # The bars a job's strategy gets, adjusted columns included.
            spec = BacktestSpec(dataset="ev", universe=[symbol], start=start, end=end)
            job_bars, data = load_slice(api.stack, spec)
            job_bars, _ = with_reference(api.stack, spec, data["version"], job_bars)
            assert bars.equals(job_bars) and "adj_close" in bars.columns
            assert corporate is not None
            assert corporate.actions.equals(reference.actions)
            assert corporate.listings.equals(reference.listings)
        wrong = api.get("/v1/datasets/ev/reference/prices")
        assert wrong.status_code == 404 and "corporate_actions" in wrong.json()["message"]

        def hold(frame: pl.DataFrame) -> pl.DataFrame:
            return frame.select("ts", "symbol", weight=pl.lit(1.0))

        quick = pitwall.backtest(hold, bars, costs=Costs(), audit=False, corporate=corporate)
        weights = validate_weights(hold(bars), bars, [symbol])
        paid = run_vectorized(bars, weights, capital=1_000_000.0, costs=Costs(),
                              corporate=corporate)
        unpaid = run_vectorized(bars, weights, capital=1_000_000.0, costs=Costs())
        assert quick.metrics.final_equity == pytest.approx(paid.final_equity, rel=1e-12)
        assert paid.final_equity != pytest.approx(unpaid.final_equity, rel=1e-9)
    finally:
        api.server.stop()


def test_a_version_without_reference_data_has_none(sqlite_api: Api) -> None:
    with Client(sqlite_api.url, sqlite_api.tokens["alice"]) as client:
        assert client.reference("sample") is None
        with pytest.raises(ApiError) as err:
            client.reference("no-such-dataset")
        assert err.value.status == 404
