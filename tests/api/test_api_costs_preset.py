"""Official runs default to the deployment's costs preset (docs/engine-conventions.md §2.3):
a spec that names none, sent by ``pitwall.Client`` to a live API over a real store, is
stored with the default preset and its numbers (fields the spec sets win), runs through
gVisor with costs, and says so in its report; a named preset is kept; a rerun of a job
stored before the default existed runs its stored spec as it is; the setting changes the
default."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from apikit import ROOT, Api, StartApi, bundle_bytes, spec_json

from pitwall.bundle import build_bundle
from pitwall.models import (
    COSTS_PRESETS,
    BacktestSpec,
    Costs,
    Execution,
    JobStatus,
    Limits,
)
from pitwall.notebook.client import Client
from pitwall_executor.config import load_config
from pitwall_executor.jobs.schema import jobs
from pitwall_executor.stack import Stack

SMA = ROOT / "examples" / "sma_crossover.py"
RETAIL_COSTS, RETAIL_EXECUTION = COSTS_PRESETS["retail"]


def spec(**fields: Any) -> BacktestSpec:
    return BacktestSpec(dataset="sample", universe=["AAPL", "MSFT", "AMZN"],
                        start=dt.date(2024, 3, 4), end=dt.date(2024, 3, 15),
                        params={"fast": 5, "slow": 60}, audit=False,
                        limits=Limits(timeout_s=120, memory_mb=1024), **fields)


def stored(api: Api | Stack, job_id: str) -> dict[str, Any]:
    """The job's spec as the store holds it (its JSON, keys as written)."""
    store = api.stack.store if isinstance(api, Api) else api.store
    with store.engine.connect() as conn:
        raw = conn.execute(sa.select(jobs.c.spec).where(jobs.c.id == job_id)).scalar_one()
    loaded: dict[str, Any] = json.loads(raw)
    return loaded


def client_of(api: Api) -> Client:
    return Client(api.url, api.tokens["alice"], timeout=30)


@pytest.fixture
def serve(live_api: StartApi, pg_url: str) -> Api:
    return live_api(pg_url, workers=1)


def test_a_run_without_a_preset_gets_retail_and_pays_costs_and_frictionless_stays_free(
        serve: Api) -> None:
    bundle = build_bundle({"sma_crossover.py": SMA.read_bytes()}, entrypoint="sma_crossover.py")
    with client_of(serve) as client:
        default_id = client.submit(bundle, spec())
        free_id = client.submit(bundle, spec(costs_preset="frictionless"))
        views = {job: client.wait(job, timeout=300) for job in (default_id, free_id)}
        sheets = {job: json.loads(client.artifact(job, "tearsheet.json")) for job in views}
        reports = {job: client.artifact(job, "report.html").decode() for job in views}
    for view in views.values():
        assert view.status is JobStatus.COMPLETED and view.metrics is not None, view.reason

    # Stored with the preset's name and numbers, and the default it came from.
    retail = stored(serve, default_id)
    assert (retail["costs_preset"], retail["default_costs_preset"]) == ("retail", "retail")
    assert retail["costs"] == {**Costs().model_dump(), **RETAIL_COSTS}
    assert retail["execution"] == {**Execution().model_dump(), **RETAIL_EXECUTION}
    free = stored(serve, free_id)
    assert (free["costs_preset"], free["default_costs_preset"]) == ("frictionless", "retail")
    assert free["costs"] == Costs().model_dump() and free["execution"] == Execution().model_dump()

    # The default run paid a spread and impact; the frictionless one paid nothing.
    paid, unpaid = sheets[default_id]["costs"], sheets[free_id]["costs"]
    assert paid["trade_costs"] > 0 and paid["spread"] > 0 and paid["impact"] > 0
    assert unpaid["trade_costs"] == 0
    assert views[default_id].metrics != views[free_id].metrics
    assert views[default_id].metrics.n_trades > 0  # type: ignore[union-attr]
    # The report says which preset and whether it was the deployment's default.
    assert sheets[default_id]["header"]["costs_preset"] == "retail"
    assert sheets[default_id]["header"]["default_costs_preset"] == "retail"
    assert "<td>retail (the deployment&#x27;s default)</td>" in reports[default_id]
    assert ("<td>frictionless (asked for; the deployment&#x27;s default was retail)</td>"
            in reports[free_id])


def test_fields_the_spec_sets_override_the_default_preset(api: Api) -> None:
    with client_of(api) as client:
        own = client.submit(bundle_bytes(), spec(
            costs=Costs(spread_bps=0.0, commission_bps=2.0),
            execution=Execution(participation=0.5, max_gross=1.0)))
        # A sweep's runs too: each child stores the resolved spec.
        sweep = client.submit_sweep(bundle_bytes(), spec(costs=Costs(spread_bps=0.0)),
                                    {"fast": [5, 10]})
    got = stored(api, own)
    assert got["costs_preset"] == "retail"
    assert got["costs"] == {**Costs().model_dump(), **RETAIL_COSTS, "spread_bps": 0.0,
                            "commission_bps": 2.0}
    assert got["execution"] == {**Execution().model_dump(), **RETAIL_EXECUTION,
                                "participation": 0.5, "max_gross": 1.0}
    children = [row.job_id for row in api.stack.store.sweep_results(sweep)]
    assert len(children) == 2
    for child in children:
        kept = stored(api, child)
        assert kept["costs_preset"] == "retail" and kept["costs"]["spread_bps"] == 0.0
        assert kept["costs"]["impact_coefficient"] == RETAIL_COSTS["impact_coefficient"]
        assert kept["execution"]["lot_size"] == RETAIL_EXECUTION["lot_size"]

    # Raw JSON: the keys sent are what the spec sets.
    res = api.submit(spec=spec_json(costs={"slippage_bps": 1.0}))
    assert res.status_code == 202, res.text
    raw = stored(api, res.json()["id"])
    assert raw["costs_preset"] == "retail" and raw["costs"]["slippage_bps"] == 1.0
    assert raw["costs"]["spread_bps"] == RETAIL_COSTS["spread_bps"]


def test_a_rerun_of_a_job_stored_before_the_default_keeps_its_zero_costs(api: Api) -> None:
    res = api.submit(spec=spec_json(costs_preset="frictionless",
                                    costs={"commission_bps": 3.0}))
    assert res.status_code == 202, res.text
    old = res.json()["id"]
    # Rewrite it as a spec stored before presets were resolved: no preset, no default.
    written = {k: v for k, v in stored(api, old).items()
               if k not in ("costs_preset", "default_costs_preset")}
    with api.stack.store.engine.begin() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.id == old).values(spec=json.dumps(written)))
    assert api.stack.store.get(old).spec.costs_preset == "frictionless"

    rerun = api.post(f"/v1/backtests/{old}/rerun")
    assert rerun.status_code == 202, rerun.text
    again = stored(api, rerun.json()["id"])
    assert again["costs_preset"] == "frictionless" and "default_costs_preset" not in again
    assert again["costs"] == {**Costs().model_dump(), "commission_bps": 3.0}
    assert again["execution"] == Execution().model_dump()


def test_the_deployment_setting_changes_the_default(tmp_path: Path, lake: Path,
                                                    pg_url: str) -> None:
    data_dir = tmp_path / "data"
    cfg = load_config(environ={"PITWALL_DEFAULT_COSTS_PRESET": "institutional"},
                      data_dir=data_dir, db_url=pg_url, lake_url=str(lake))
    stack = Stack.from_config(cfg)
    try:
        # The embedded submission (pitwall run without a server) applies it too.
        job = stack.submit(spec(), bundle_bytes(), researcher="t")
        named = stack.submit(spec(costs_preset="retail"), bundle_bytes(), researcher="t")
        institutional = stored(stack, job)
        assert institutional["costs_preset"] == "institutional"
        assert institutional["default_costs_preset"] == "institutional"
        costs, execution = COSTS_PRESETS["institutional"]
        assert institutional["costs"] == {**Costs().model_dump(), **costs}
        assert institutional["execution"] == {**Execution().model_dump(), **execution}
        kept = stored(stack, named)
        assert (kept["costs_preset"], kept["default_costs_preset"]) == ("retail",
                                                                        "institutional")
        assert kept["costs"] == {**Costs().model_dump(), **RETAIL_COSTS}
    finally:
        stack.store.close()
