"""The HTML report is written after the job's status and metrics are committed, and a
report that fails to write never costs the job its metrics (docs/architecture.md §2,
"record"); the metrics are shown while the lookahead audit still runs ("metrics first");
the live sessions of the lookahead audit and of event jobs are restored from the runner's
checkpoint like one-shot runs. Real jobs through gVisor and an in-process worker, on one
stack (one checkpoint image)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.orchestration.conftest import sleeper, spec

from pitwall.bundle import build_bundle
from pitwall.models import BacktestSpec, EngineKind, JobStatus, Limits
from pitwall_executor.api.handlers import _still_writing
from pitwall_executor.config import load_config
from pitwall_executor.execution import attempt as attempt_module
from pitwall_executor.orchestration.worker import Worker
from pitwall_executor.sandbox.checkpoint import SnapshotStore
from pitwall_executor.stack import Stack

BUY_AND_HOLD = """
import pitwall

class BuyAndHold(pitwall.Strategy):
    at = "09:31"

    def on_bar(self, ctx):
        ctx.order_target_percent(ctx.symbols[0], 0.5)
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, lake_dir: Path) -> Stack:
    data_dir = tmp_path_factory.mktemp("report-after-commit")
    data_dir.chmod(0o755)
    return Stack.from_config(load_config(environ={}, data_dir=data_dir,
                                         lake_url=str(lake_dir), sandbox="gvisor"))


def snapshots(stack: Stack) -> SnapshotStore:
    store = getattr(stack.backend, "snapshots", None)
    assert isinstance(store, SnapshotStore), "the gVisor backend restores from checkpoints"
    return store


def test_metrics_are_committed_before_the_report_and_kept_when_it_fails(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = stack.submit(spec(audit=True), sleeper(0), researcher="ada")
    snapshots(stack).image(spec().limits)  # built beforehand: the counts below are the job's
    restored, fallbacks = snapshots(stack).restored, snapshots(stack).fallbacks
    seen: dict[str, Any] = {}

    def failing_report(*_args: object, **_kwargs: object) -> None:
        # What a client could read at the moment the report starts being written.
        seen["view"] = stack.store.get(job_id)
        seen["artifacts"] = set(stack.store.artifacts(job_id))
        seen["events"] = [e.kind for e in stack.store.events(job_id)]
        seen["pending"] = _still_writing(stack.store, seen["view"])
        raise OSError("No space left on device")

    monkeypatch.setattr(attempt_module, "write_report", failing_report)
    assert Worker(stack, name="test-worker").run_one(timeout=10) == job_id

    # When the report was being written, the job had ended with its metrics, and what a
    # client shows at once (metrics, equity curve, manifest, log) was recorded.
    assert seen, "the report was never written"
    assert seen["view"].status is JobStatus.COMPLETED and seen["view"].metrics is not None
    assert seen["artifacts"] == {"metrics.json", "equity.parquet", "manifest.json", "log.txt"}
    assert seen["events"][-1] == "status"
    # ... and the API answered "503, retry in a second" for the report, not 404; once the
    # artifacts event is recorded it no longer does (a missing file is then missing).
    assert seen["pending"] is True
    assert _still_writing(stack.store, stack.store.get(job_id)) is False

    # The report failed: the job keeps its status and metrics, gets a plain report that
    # says why, and the artifacts event says it too, with the attempt's stage timings.
    view = stack.store.get(job_id)
    assert view.status is JobStatus.COMPLETED and view.metrics == seen["view"].metrics
    rows = stack.store.artifacts(job_id)
    assert set(rows) == seen["artifacts"] | {"report.html"}
    page = Path(rows["report.html"]["uri"].removeprefix("file://")).read_text()
    assert "Report unavailable" in page and "No space left on device" in page
    assert "sharpe" in page  # the recorded metrics
    done = [e for e in stack.store.events(job_id) if e.kind == "artifacts"]
    assert len(done) == 1 and done[0].data is not None
    assert done[0].data["names"] == ["report.html"]
    assert "No space left on device" in done[0].data["error"]
    timings = done[0].data["timings"]
    for stage in ("bundle", "data", "stage", "sandbox", "validate", "audit", "engine",
                  "wait_engine", "metrics", "artifacts", "record"):  # engine: during the audit
        assert timings[stage] >= 0.0, stage
    assert sum(timings.values()) > 0.0
    assert not (stack.artifacts.attempt_dir(job_id, 1) / ".report").exists()
    # The strategy's run and the audit's prefix session were both restored, not booted.
    assert view.metrics.lookahead is not None
    assert view.metrics.lookahead.status == "no_lookahead_found", view.metrics.lookahead
    assert (snapshots(stack).restored - restored, snapshots(stack).fallbacks) == (2, fallbacks)


def test_the_metrics_are_shown_while_the_audit_runs_and_the_verdict_comes_at_the_end(
        stack: Stack) -> None:
    # Every call sleeps, so each of the audit's re-runs does: the audit outlasts the
    # accounting by seconds, and the metrics must be visible in that window.
    job_id = stack.submit(spec(audit=True), sleeper(0.5), researcher="ada")
    worker = threading.Thread(target=Worker(stack, name="test-worker").run_one,
                              kwargs={"timeout": 10})
    worker.start()
    early = None
    while worker.is_alive() and early is None:
        view = stack.store.get(job_id)
        if view.status is JobStatus.RUNNING and view.metrics is not None:
            early = view.metrics
        time.sleep(0.02)
    worker.join(300)
    assert early is not None, "the metrics were never shown while the job ran"
    assert early.lookahead is not None and early.lookahead.status == "pending"
    assert "before its verdict" in early.lookahead.statement
    final = stack.store.get(job_id)
    assert final.status is JobStatus.COMPLETED and final.metrics is not None, final.reason
    assert final.metrics.lookahead is not None
    assert final.metrics.lookahead.status == "no_lookahead_found"
    assert final.metrics.model_copy(update={"lookahead": early.lookahead}) == early
    # The event that announced them came before the terminal one; one metrics row is left.
    events = stack.store.events(job_id)
    shown = [e.seq for e in events if e.kind == "progress" and (e.data or {}).get("metrics")]
    [ended] = [e.seq for e in events if e.status is JobStatus.COMPLETED]
    assert len(shown) == 1 and shown[0] < ended
    with stack.store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM metrics WHERE job_id = :j"),
                            {"j": job_id}).scalar_one() == 1


def test_an_event_job_runs_in_a_restored_session(stack: Stack) -> None:
    limits = Limits(timeout_s=120, memory_mb=512)
    snapshots(stack).image(limits)
    restored = snapshots(stack).restored
    event = BacktestSpec(dataset="sample", universe=["AAPL"], start=dt.date(2024, 3, 4),
                         end=dt.date(2024, 3, 5), engine=EngineKind.EVENT, limits=limits)
    bundle = build_bundle({"strategy.py": BUY_AND_HOLD}, entrypoint="strategy.py", kind="event")
    job_id = stack.submit(event, bundle, researcher="ada")
    assert Worker(stack, name="test-worker").run_one(timeout=10) == job_id
    view = stack.store.get(job_id)
    assert view.status is JobStatus.COMPLETED and view.metrics is not None, view.reason
    assert view.metrics.n_trades >= 1  # the lock-step ran through the restored runner
    assert snapshots(stack).restored == restored + 1
    assert "report.html" in stack.store.artifacts(job_id)
    [done] = [e for e in stack.store.events(job_id) if e.kind == "artifacts"]
    assert done.data is not None and done.data["timings"]["sandbox_start"] >= 0.0
