"""A dataset version with corporate actions (docs/reference-data.md) run as jobs through a
real worker and the gVisor sandbox: the strategy sees point-in-time adjusted prices, the
trusted engine pays the dividend, the manifest says what the actions did, and the event
engine applies the same actions while its strategy reads adjusted prices that are never
revised."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from pitwall.bundle import build_bundle
from pitwall.engine.corporate import CorporateActions
from pitwall.engine.validate import validate_weights
from pitwall.engine.vectorized import run_vectorized
from pitwall.models import BacktestSpec, EngineKind, JobStatus, Limits
from pitwall.notebook.event_quick_run import run_local
from pitwall_executor.config import load_config
from pitwall_executor.datalake import Catalog, generate_dataset, sample_symbols
from pitwall_executor.datalake.reference import read_reference
from pitwall_executor.execution.attempt import load_slice, with_reference
from pitwall_executor.orchestration.worker import Worker
from pitwall_executor.stack import Stack

pytestmark = pytest.mark.sandbox

HOLD = """
import polars as pl
import pitwall

@pitwall.vectorized
def hold(bars, symbol):
    if "adj_close" not in bars.columns:
        raise RuntimeError("no point-in-time adjusted prices in the bars")
    return bars.select("ts", "symbol",
                       weight=pl.when(pl.col("symbol") == symbol).then(0.5).otherwise(0.0))
"""

EVENT = """
import math
import pitwall

class Hold(pitwall.Strategy):
    seen = None

    def on_start(self, ctx):
        self.seen = {}
        self.bars = 0

    def on_bar(self, ctx):  # due at every bar
        # Point in time: what an adjusted bar showed is never revised by a later step.
        self.bars += 1
        n = min(ctx.available, 50)
        adj = ctx.history("adj_close", n, ctx.symbols[0])
        k = self.bars - n
        for i, value in enumerate(adj):
            before = self.seen.get(k + i)
            if before is not None and not (before == value or
                                           (math.isnan(before) and math.isnan(value))):
                raise RuntimeError(f"adjusted bar {k + i} changed from {before} to {value}")
            self.seen[k + i] = float(value)
        ctx.order_target_percent(ctx.symbols[0], 0.5)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    root = tmp_path_factory.mktemp("corporate-job")
    root.chmod(0o755)
    generate_dataset(Catalog(root / "lake"), "ev", symbols=sample_symbols(8),
                     start=dt.date(2024, 1, 1), end=dt.date(2024, 3, 31), seed=11,
                     corporate_events=True)
    return Stack.from_config(load_config(environ={}, data_dir=root, sandbox="gvisor"))


def run(stack: Stack, spec: BacktestSpec, source: str, kind: str) -> str:
    bundle = build_bundle({"strategy.py": source}, entrypoint="strategy.py", kind=kind)
    job_id = stack.submit(spec, bundle, researcher="t")
    assert Worker(stack).run_one(timeout=5) == job_id
    return job_id


def test_a_dividend_is_paid_by_both_engines_and_recorded(
        stack: Stack) -> None:
    snapshot = stack.catalog.snapshot("ev")
    actions = read_reference(stack.catalog, snapshot).actions
    dividend = actions.filter(pl.col("kind") == "dividend",
                              pl.col("effective_date") >= dt.date(2024, 1, 10)).row(0, named=True)
    symbol, ex_day = dividend["symbol"], dividend["effective_date"]
    spec = BacktestSpec(dataset="ev", universe=[symbol, "GOOG" if symbol != "GOOG" else "MSFT"],
                        start=ex_day - dt.timedelta(days=4), end=ex_day + dt.timedelta(days=2),
                        params={"symbol": symbol}, audit=False,
                        limits=Limits(timeout_s=120, memory_mb=512),
                        # compared below with the engine run in-process on the spec's costs
                        costs_preset="frictionless")
    job_id = run(stack, spec, HOLD, "vectorized")
    view = stack.store.get(job_id)
    assert view.status is JobStatus.COMPLETED and view.metrics is not None, view.reason
    rows = stack.store.artifacts(job_id)
    manifest = json.loads(Path(rows["manifest.json"]["uri"].removeprefix("file://")).read_text())
    corporate = manifest["corporate_actions"]
    assert (corporate["splits"], corporate["dividends"]) == (0, 1), corporate
    assert corporate["dividend_cash"] > 0

    # The job's equity is the engine's with the actions applied, not the raw bars' one.
    bars, data = load_slice(stack, spec)
    bars, actions_used = with_reference(stack, spec, data["version"], bars)
    assert isinstance(actions_used, CorporateActions)
    weights = validate_weights(bars.select("ts", "symbol", weight=pl.when(
        pl.col("symbol") == symbol).then(0.5).otherwise(0.0)), bars, spec.universe)
    paid = run_vectorized(bars, weights, capital=spec.capital, costs=spec.costs,
                          corporate=actions_used).final_equity
    unpaid = run_vectorized(bars, weights, capital=spec.capital, costs=spec.costs).final_equity
    assert view.metrics.final_equity == pytest.approx(paid, rel=1e-12)
    assert paid != pytest.approx(unpaid, rel=1e-9)

    # The event engine applies the same actions: its broker pays the dividend into the
    # book and the equity is that of an in-process run on the same bars and actions.
    event = spec.model_copy(update={"engine": EngineKind.EVENT, "params": {}})
    event_view = stack.store.get(run(stack, event, EVENT, "event"))
    assert event_view.status is JobStatus.COMPLETED, event_view.reason
    assert event_view.metrics is not None
    rows = stack.store.artifacts(event_view.id)
    manifest = json.loads(Path(rows["manifest.json"]["uri"].removeprefix("file://")).read_text())
    corporate = manifest["corporate_actions"]
    assert (corporate["splits"], corporate["dividends"]) == (0, 1), corporate
    assert corporate["dividend_cash"] > 0
    namespace: dict[str, object] = {}
    exec(compile(EVENT, "strategy.py", "exec"), namespace)  # the test's own strategy
    local = run_local(namespace["Hold"], bars.filter(pl.col("symbol").is_in(spec.universe)),
                      capital=spec.capital, costs=spec.costs, symbols=spec.universe,
                      corporate=actions_used)
    assert local.corporate is not None
    assert local.corporate.dividend_cash == pytest.approx(corporate["dividend_cash"], rel=1e-12)
    assert event_view.metrics.final_equity == pytest.approx(local.final_equity, rel=1e-12)
