"""Sweeps over HTTP: a grid fans out to child jobs; the parent aggregates; a results table."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import numpy as np
import polars as pl
import pytest
import requests
from apikit import ROOT, Api, StartApi, bundle_bytes, spec_json

from pitwall.bundle import build_bundle
from pitwall.engine import overfit
from pitwall.engine.metrics import sharpe
from pitwall.models import BacktestSpec, JobStatus, Metrics
from pitwall.notebook.client import ApiError, Client
from pitwall_executor.cli.sweep import print_results
from pitwall_executor.datalake.market_calendar import trading_minutes
from pitwall_executor.jobs.sweeps import MAX_SWEEP_RUNS

SMA = ROOT / "examples" / "sma_crossover.py"
GRID = {"fast": [5, 10], "slow": [60, 120]}


def post_sweep(api: Api, grid: Any, who: str = "alice", spec: str | None = None,
               bundle: bytes | None = None) -> requests.Response:
    raw = grid if isinstance(grid, str) else json.dumps(grid)
    files = {"bundle": ("bundle.zip", bundle_bytes() if bundle is None else bundle,
                        "application/zip"),
             "spec": ("spec.json", spec_json() if spec is None else spec, "application/json"),
             "grid": ("grid.json", raw, "application/json")}
    return api.post("/v1/sweeps", who, files=files)


@pytest.fixture
def serve(live_api: StartApi) -> Api:
    return live_api(workers=2)


def test_a_2x2_sweep_of_the_sma_example_runs_in_gvisor(serve: Api) -> None:
    bundle = build_bundle({"sma_crossover.py": SMA.read_bytes()}, entrypoint="sma_crossover.py")
    spec = spec_json(universe=["AAPL", "MSFT"], start="2024-03-04", end="2024-03-08",
                     params={"fast": 30, "slow": 240})
    res = post_sweep(serve, GRID, spec=spec, bundle=bundle)
    assert res.status_code == 202, res.text
    parent, children = res.json()["id"], res.json()["children"]
    assert len(children) == 4 and parent not in children
    assert res.headers["Location"] == f"/v1/sweeps/{parent}"
    deadline = time.monotonic() + 240
    seen_progress = set()
    while (view := serve.get(f"/v1/backtests/{parent}").json())["status"] in ("PENDING",
                                                                                 "RUNNING"):
        assert time.monotonic() < deadline, f"sweep still {view['status']} after 240 s"
        seen_progress.add(view["progress"])
        time.sleep(0.5)
    assert view["status"] == "COMPLETED", view["reason"]
    assert view["kind"] == "sweep" and view["parent_id"] is None and view["progress"] == 1.0
    assert seen_progress <= {0.0, 0.25, 0.5, 0.75}, seen_progress

    body = serve.get(f"/v1/sweeps/{parent}").json()
    assert body["sweep"]["id"] == parent and body["sweep"]["status"] == "COMPLETED"
    rows = body["rows"]
    assert [r["params"] for r in rows] == [{"fast": 5, "slow": 60}, {"fast": 5, "slow": 120},
                                           {"fast": 10, "slow": 60}, {"fast": 10, "slow": 120}]
    assert sorted(r["job_id"] for r in rows) == sorted(children)
    sharpes = set()
    for row in rows:
        child = serve.get(f"/v1/backtests/{row['job_id']}").json()
        assert child["status"] == row["status"] == "COMPLETED", child["reason"]
        assert child["kind"] == "backtest" and child["parent_id"] == parent
        assert child["spec"]["params"] == row["params"]  # the grid point overrode the spec's
        assert row["metrics"] == child["metrics"] and child["metrics"]["n_bars"] == trading_minutes(
            dt.date(2024, 3, 4), dt.date(2024, 3, 8))
        sharpes.add(row["metrics"]["sharpe"])
    assert len(sharpes) > 1, "different parameters gave identical results"
    over = body["overfitting"]  # read back from the runs' equity curves: 5 days, no CSCV
    assert over["n_trials"] == 4 and over["n_days"] == 5 and over["pbo"] is None
    assert over["best_sharpe"] == pytest.approx(max(sharpes))
    assert over["best_job_id"] in children and 0.0 <= over["dsr"] <= 1.0
    assert any("PBO needs at least 20 trading days" in p for p in over["problems"])
    with Client(serve.url, serve.tokens["alice"]) as client:  # the SDK's table is the same
        table = client.sweep_results(parent)
    assert table["job_id"].to_list() == [r["job_id"] for r in rows]
    assert table.select("fast", "slow").rows() == [(5, 60), (5, 120), (10, 60), (10, 120)]
    for name in ("sharpe", "total_return", "max_drawdown", "n_trades"):
        assert table[name].to_list() == [r["metrics"][name] for r in rows], name


def _assert_400_on_grid(api: Api, res: requests.Response) -> None:
    assert res.status_code == 400, res.text
    assert [f["field"] for f in res.json()["fields"]] == ["grid"], res.text
    assert api.counts() == (0, 0)  # no job and no bundle row left behind
    assert api.files() == set()


@pytest.mark.parametrize("grid", [
    {}, [5, 10], "not json", 5, {"fast": []}, {"fast": 5}, {"not a name": [1]},
    {"fast": [{"nested": "object"}]}, {"a": list(range(100)), "b": list(range(11))},
], ids=["empty", "list", "not-json", "number", "no-values", "not-a-list", "bad-name",
        "unknown-type", "too-many-runs"])
def test_a_bad_grid_is_a_400_naming_grid_and_leaves_nothing(api: Api, grid: Any) -> None:
    if isinstance(grid, dict) and "a" in grid:
        assert len(grid["a"]) * len(grid["b"]) > MAX_SWEEP_RUNS
    _assert_400_on_grid(api, post_sweep(api, grid))


def test_a_missing_grid_and_an_oversized_bundle_are_refused(api: Api) -> None:
    files = {"bundle": ("bundle.zip", bundle_bytes(), "application/zip"),
             "spec": ("spec.json", spec_json(), "application/json")}
    _assert_400_on_grid(api, api.post("/v1/sweeps", files=files))
    big = post_sweep(api, GRID, bundle=b"x" * (api.stack.config.max_bundle_mb * 2**20 + 10))
    assert big.status_code == 413, big.text
    bad_spec = post_sweep(api, GRID, spec=spec_json(dataset="nope"))
    assert bad_spec.status_code == 400 and bad_spec.json()["fields"][0]["field"] == "spec.dataset"
    assert api.counts() == (0, 0)


def test_only_the_owner_reads_a_sweep(api: Api) -> None:
    res = post_sweep(api, GRID)
    assert res.status_code == 202, res.text
    parent = res.json()["id"]
    mine = api.get(f"/v1/sweeps/{parent}")
    assert mine.status_code == 200 and len(mine.json()["rows"]) == 4
    assert {r["status"] for r in mine.json()["rows"]} == {"PENDING"}
    assert api.get(f"/v1/sweeps/{parent}", "bob").status_code == 404
    assert api.get(f"/v1/backtests/{parent}", "bob").status_code == 404
    child = res.json()["children"][0]
    assert api.get(f"/v1/backtests/{child}", "bob").status_code == 404
    assert api.get(f"/v1/sweeps/{parent}", "root").status_code == 200  # the admin sees all
    single = api.submit().json()["id"]
    assert api.get(f"/v1/sweeps/{single}").status_code == 404  # a backtest is not a sweep
    assert api.get("/v1/sweeps").status_code == 405


def test_the_client_submits_a_sweep_and_reads_its_table(api: Api) -> None:
    spec = BacktestSpec.model_validate_json(spec_json(params={"fast": 1, "other": "kept"}))
    with Client(api.url, api.tokens["alice"]) as client:
        parent = client.submit_sweep(bundle_bytes(), spec, GRID)
        view = client.get(parent)
        table = client.sweep_results(parent)
        with pytest.raises(ApiError) as err:
            client.submit_sweep(bundle_bytes(), spec, {"fast": []})
    assert view.kind == "sweep" and view.status.value == "PENDING" and view.progress == 0.0
    assert table.height == 4 and table["status"].to_list() == ["PENDING"] * 4
    assert table["fast"].to_list() == [5, 5, 10, 10] and table["sharpe"].null_count() == 4
    child = api.stack.store.get(table["job_id"][0])
    assert child.parent_id == parent and child.spec.params == {"fast": 5, "other": "kept",
                                                              "slow": 60}
    assert err.value.status == 400 and "grid" in err.value.message
    assert api.counts()[0] == 5  # the refused sweep left no row


def test_the_openapi_document_lists_the_sweep_routes(api: Api) -> None:
    doc = requests.get(api.url + "/v1/openapi.json", timeout=10).json()
    assert "grid" in doc["paths"]["/v1/sweeps"]["post"]["requestBody"]["content"][
        "multipart/form-data"]["schema"]["required"]
    assert {"CreateSweepResponse", "SweepResultsResponse", "SweepRow", "Overfitting",
            "WalkForwardFold"} <= set(
        doc["components"]["schemas"])


def _complete_with_returns(api: Api, job_id: str, returns: np.ndarray) -> None:
    """Drive a child to COMPLETED through the real store with an equity.parquet whose
    daily returns are ``returns`` (one bar a day at 20:00 UTC, on weekdays from 2022-01-03),
    in the artifact store the API reads, as a worker would record it."""
    store = api.stack.store
    attempt = store.start_attempt(job_id, "test-worker")
    assert attempt is not None
    out = api.stack.artifacts.attempt_dir(job_id, attempt)
    days = [d for d in (dt.date(2022, 1, 3) + dt.timedelta(n) for n in range(2 * len(returns)))
            if d.weekday() < 5][:len(returns)]
    capital = BacktestSpec.model_validate_json(spec_json()).capital
    pl.DataFrame({"ts": [dt.datetime.combine(d, dt.time(20), dt.UTC) for d in days],
                  "equity": capital * np.cumprod(1 + returns)}).with_columns(
        pl.col("ts").dt.cast_time_unit("us")).write_parquet(out / "equity.parquet")
    metrics = Metrics(total_return=0.0, cagr=0.0, annual_volatility=0.0,
                      sharpe=sharpe(returns), sortino=0.0, max_drawdown=0.0, turnover=0.0,
                      exposure=0.0, n_days=len(returns), n_bars=len(returns),
                      final_equity=1e6)
    assert store.finish(job_id, attempt, JobStatus.COMPLETED, metrics=metrics,
                        artifact_rows=[api.stack.artifacts.describe(out / "equity.parquet")])


def _sweep_of(api: Api, grid: dict[str, list[Any]]) -> tuple[str, list[str]]:
    res = post_sweep(api, grid)
    assert res.status_code == 202, res.text
    parent = res.json()["id"]
    return parent, [r.job_id for r in api.stack.store.sweep_results(parent)]  # grid order


def test_a_pure_noise_sweep_of_100_runs_is_flagged_overfit(api: Api, capsys: Any) -> None:
    """100 runs of no skill (the returns of tests/engine/test_overfit.py's noise sweep),
    recorded as equity curves: the API reads them back, and its DSR, PBO and walk-forward
    are those of pitwall.engine.overfit on the same matrix; the CLI prints the verdict."""
    noise = np.random.default_rng(2).normal(0.0, 0.01, size=(504, 100))
    parent, children = _sweep_of(api, {"fast": list(range(10)), "slow": list(range(10))})
    before = api.get(f"/v1/sweeps/{parent}").json()
    assert before["overfitting"] is None and "0/100 runs finished" in before[
        "overfitting_note"]
    for n, job_id in enumerate(children):
        _complete_with_returns(api, job_id, noise[:, n])
    body = api.get(f"/v1/sweeps/{parent}").json()
    assert body["sweep"]["status"] == "COMPLETED" and body["overfitting_note"] is None
    result = body["overfitting"]
    deflated, cscv = overfit.deflated_sharpe(noise), overfit.pbo(noise)
    assert result["n_trials"] == 100 and result["n_days"] == 504
    assert result["best_job_id"] == children[deflated.best]
    assert result["best_params"] == {"fast": deflated.best // 10, "slow": deflated.best % 10}
    assert result["dsr"] == pytest.approx(deflated.dsr, rel=1e-9) and result["dsr"] < 0.6
    assert result["pbo"] == pytest.approx(cscv.pbo) and result["pbo"] >= 0.5
    assert result["cscv_splits"] == 16 and len(result["logits"]) == 5
    assert abs(result["oos_sharpe"]) < 1.0 and len(result["walk_forward"]) == 4
    assert result["overfit"] is True and result["verdict"].startswith("likely overfit: PBO")
    assert api.get(f"/v1/sweeps/{parent}").json()["overfitting"] == result  # cached, same
    print_results(api.stack.store.get(parent), api.stack.store.sweep_results(parent),
                  api.stack)
    printed = capsys.readouterr().out
    assert f"WARNING: overfitting: {result['verdict']}" in printed
    assert f"PBO           {result['pbo']:.3f} by CSCV with S=16" in printed


def test_one_real_edge_is_not_flagged_and_short_sweeps_say_what_is_missing(api: Api) -> None:
    returns = np.random.default_rng(2).normal(0.0, 0.01, size=(504, 4))
    returns[:, 1] += 0.003
    parent, children = _sweep_of(api, GRID)
    for n, job_id in enumerate(children):
        _complete_with_returns(api, job_id, returns[:, n])
    result = api.get(f"/v1/sweeps/{parent}").json()["overfitting"]
    assert result["best_params"] == {"fast": 5, "slow": 120} and result["overfit"] is False
    assert result["dsr"] > 0.95 and result["pbo"] < 0.05
    assert result["verdict"].startswith("no sign of overfitting")

    short, children = _sweep_of(api, GRID)  # 10 days: a DSR, but no CSCV nor walk-forward
    for n, job_id in enumerate(children):
        _complete_with_returns(api, job_id, returns[:10, n])
    result = api.get(f"/v1/sweeps/{short}").json()["overfitting"]
    assert result["pbo"] is None and result["walk_forward"] is None
    assert any("PBO needs at least 20 trading days" in p and "longer period" in p
               for p in result["problems"])

    lonely, children = _sweep_of(api, GRID)  # one completed run: nothing to compare
    _complete_with_returns(api, children[0], returns[:, 0])
    for job_id in children[1:]:
        api.stack.store.cancel(job_id)
    body = api.get(f"/v1/sweeps/{lonely}").json()
    assert body["sweep"]["status"] == "COMPLETED" and body["overfitting"] is None
    assert "at least 2 completed runs" in body["overfitting_note"]
