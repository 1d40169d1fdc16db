"""Both engines run through the one attempt template and record the same manifest: a
vectorized job and an event-driven job, each through a real worker and the real gVisor
sandbox, store ``manifest.json`` with the sandbox as ``{backend, image}`` (the image is
the gVisor runtime digest), the pinned data and the engine's own entries."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from tests.strategies import slow_event

from pitwall.bundle import build_bundle
from pitwall.models import BacktestSpec, EngineKind, Execution, JobStatus, JobView, Limits
from pitwall_executor.config import load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.orchestration.worker import Worker
from pitwall_executor.sandbox.gvisor import GVisorBackend
from pitwall_executor.stack import Stack

pytestmark = pytest.mark.sandbox

VECTORIZED = """
import polars as pl
import pitwall

@pitwall.vectorized
def half(bars):
    return bars.select("ts", "symbol", weight=pl.lit(0.5))
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    root = tmp_path_factory.mktemp("attempt-manifest")
    root.chmod(0o755)
    generate_dataset(Catalog(root / "lake"), "sample", symbols=["AAPL", "MSFT"],
                     start=dt.date(2024, 3, 4), end=dt.date(2024, 3, 8), seed=7)
    return Stack.from_config(load_config(environ={}, data_dir=root, sandbox="gvisor"))


def run_job(stack: Stack, source: str, engine: EngineKind, **spec: Any,
            ) -> tuple[JobView, dict[str, dict[str, Any]]]:
    """One job of ``source`` through a worker; its COMPLETED view and artifact rows."""
    bundle = build_bundle({"strategy.py": source}, entrypoint="strategy.py", kind=engine.value)
    job_id = stack.submit(BacktestSpec(dataset="sample", universe=["AAPL", "MSFT"],
                                       start=dt.date(2024, 3, 4), end=dt.date(2024, 3, 5),
                                       engine=engine, audit=False,
                                       limits=Limits(timeout_s=120, memory_mb=512), **spec),
                          bundle, researcher="t")
    Worker(stack).run_one(timeout=5)
    view = stack.store.get(job_id)
    assert view.status is JobStatus.COMPLETED, view.reason
    return view, stack.store.artifacts(job_id)


def manifest_of(stack: Stack, source: str, engine: EngineKind) -> dict[str, Any]:
    view, rows = run_job(stack, source, engine, seed=9)
    assert {"manifest.json", "report.html", "log.txt"} <= set(rows)
    path = Path(rows["manifest.json"]["uri"].removeprefix("file://"))
    manifest: dict[str, Any] = json.loads(path.read_text())
    assert manifest["job_id"] == view.id and manifest["attempt"] == view.attempt == 1
    assert manifest["bundle_sha256"] == view.bundle_sha256 and manifest["engine"] == engine.value
    assert manifest["spec"]["seed"] == 9 and manifest["data"]["version"] == 1
    assert [f["sha256"] for f in manifest["data"]["files"]] != []
    return manifest


def test_both_engines_record_the_sandbox_the_same_way_with_its_image_digest(
        stack: Stack) -> None:
    vectorized = manifest_of(stack, VECTORIZED, EngineKind.VECTORIZED)
    event = manifest_of(stack, slow_event(0.0), EngineKind.EVENT)
    assert isinstance(stack.backend, GVisorBackend)
    image = stack.backend.image  # the digest of everything its mounts show a job
    assert image.startswith("sha256:") and len(image) == len("sha256:") + 64
    assert vectorized["sandbox"] == event["sandbox"] == {"backend": "gvisor", "image": image}
    shared = {"job_id", "attempt", "bundle_sha256", "entrypoint", "sdk_version", "engine", "spec",
              "data", "sandbox"}
    assert set(vectorized) == shared | {"lookahead_audit"}
    assert set(event) == shared | {"lockstep"}
    assert vectorized["lookahead_audit"] == "not run"
    assert event["lockstep"]["bars"] == 2 * 390 and event["lockstep"]["round_trips"] > 0


def test_both_engines_apply_the_specs_fill_model_through_the_worker(stack: Stack) -> None:
    """Lots and a minimum trade set in the spec reach the trusted engine of both kinds of
    job (vectorized: the sequential fill pass; event: the broker, through the feeder)."""
    execution = Execution(lot_size=10.0, min_trade_notional=1_000.0)
    for source, engine in ((VECTORIZED, EngineKind.VECTORIZED),
                           (slow_event(0.0), EngineKind.EVENT)):
        # These rules alone: the default preset's costs and volume cap would add their own
        # (and its costs leave the recorded quantities whole lots only to rounding).
        _view, rows = run_job(stack, source, engine, execution=execution,
                              costs_preset="frictionless")
        trades = pl.read_parquet(Path(rows["trades.parquet"]["uri"].removeprefix("file://")))
        assert trades.height > 0, engine
        qty = trades.get_column("qty").abs().to_numpy()
        assert (qty % 10.0 == 0).all(), (engine, qty[:10])  # whole lots of 10 shares
        notional = (trades.get_column("qty") * trades.get_column("price")).abs().to_numpy()
        assert (notional >= 1_000.0 - 1e-6).all(), (engine, notional.min())
