"""The running equity curve in progress events, through a real worker and the real gVisor
sandbox: an event-driven job's curve grows while it runs, a vectorized job's arrives once
the trusted engine has accounted. Every point must lie on the final equity artifact."""

from __future__ import annotations

import datetime as dt
import io
import math
import os
from collections.abc import Callable

import polars as pl
import pytest
from tests.strategies import slow_event

from pitwall.bundle import build_bundle
from pitwall.models import (
    MAX_EQUITY_POINTS,
    BacktestSpec,
    EngineKind,
    JobStatus,
    Limits,
    ProgressEvent,
)
from pitwall_executor.config import load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.jobs.events import equity_points
from pitwall_executor.orchestration.worker import Worker
from pitwall_executor.stack import Stack

LIMITS = Limits(timeout_s=120, memory_mb=512)

EVENT = slow_event(0.004)

VECTORIZED = """
import polars as pl
import pitwall

@pitwall.vectorized
def half(bars):
    return bars.select("ts", "symbol", weight=pl.lit(0.5))
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    root = tmp_path_factory.mktemp("partial-equity")
    root.chmod(0o755)
    generate_dataset(Catalog(root / "lake"), "sample", symbols=["AAPL", "MSFT"],
                     start=dt.date(2024, 3, 4), end=dt.date(2024, 3, 8), seed=7)
    return Stack.from_config(load_config(environ={}, data_dir=root, sandbox="gvisor"))


def run(stack: Stack, source: str, engine: EngineKind, end: dt.date,
        watch: Callable[[ProgressEvent], None] = lambda _e: None) -> tuple[str, pl.DataFrame]:
    bundle = build_bundle({"strategy.py": source}, entrypoint="strategy.py")
    spec = BacktestSpec(dataset="sample", universe=["AAPL", "MSFT"], start=dt.date(2024, 3, 4),
                        end=end, engine=engine, audit=False, limits=LIMITS)
    job_id = stack.submit(spec, bundle, researcher="t")
    published: list[str] = []

    def publish(_job: str, msg: str) -> None:
        published.append(msg)
        watch(ProgressEvent.model_validate_json(msg))

    Worker(stack, publish=publish).run_one(timeout=5)
    view = stack.store.get(job_id)
    assert view.status.value == "COMPLETED", view.reason
    # What went out live is what the store keeps.
    assert [ProgressEvent.model_validate_json(m) for m in published] == stack.store.events(job_id)
    path = stack.artifacts.attempt_dir(job_id, 1) / "equity.parquet"
    final = pl.read_parquet(io.BytesIO(path.read_bytes()))
    return job_id, final.select(pl.col("ts").dt.epoch("ms"), "equity")


def on_the_final_curve(points: list[tuple[int, float]], final: pl.DataFrame) -> None:
    curve = dict(final.iter_rows())
    for ts, value in points:
        assert ts in curve, ts
        assert math.isclose(value, curve[ts], rel_tol=1e-9), (ts, value, curve[ts])


def test_an_event_job_reports_its_equity_while_it_runs(stack: Stack) -> None:
    job_id, final = run(stack, EVENT, EngineKind.EVENT, dt.date(2024, 3, 5))
    events = stack.store.events(job_id)
    with_equity = [e for e in events if e.kind == "progress" and e.equity]
    assert len(with_equity) >= 2, [(e.kind, e.progress, e.equity) for e in events]
    stamps = [ts for e in with_equity for ts, _ in (e.equity or [])]
    assert stamps == sorted(set(stamps)), "equity points must only move forward in time"
    assert len(stamps) >= 20  # ~50 ticks over the run, batched into the events
    # Reported before the job ended, with its progress, and not repeated in ``data``.
    done = next(e.seq for e in events if e.status is not None and e.status.value == "COMPLETED")
    assert all(e.seq < done and 0.1 <= (e.progress or 0) <= 0.8 for e in with_equity)
    assert all("equity" not in (e.data or {}) for e in events)
    points = [(ts, v) for e in with_equity for ts, v in (e.equity or [])]
    on_the_final_curve(points, final)
    assert points[-1] == tuple(final.row(-1))  # the curve's last point is sent too
    assert len({v for _, v in points}) > 1  # it trades: the curve moves


def test_an_event_job_feeds_on_one_cpu_then_gives_the_thread_back(stack: Stack) -> None:
    """The feeder thread runs the lock-step on one CPU it claimed (its sandbox on the
    pair's other one with the lane, on the same one without: tests/sandbox/
    test_affinity.py), and the worker thread's CPUs come back."""
    before = os.sched_getaffinity(0)
    feeding: list[set[int]] = []

    def watch(event: ProgressEvent) -> None:
        if event.equity and (event.progress or 0) < 0.79:  # the feeder thread, mid-run
            feeding.append(os.sched_getaffinity(0))

    run(stack, EVENT, EngineKind.EVENT, dt.date(2024, 3, 5), watch)
    assert len(feeding) >= 2
    assert all(len(cpus) == 1 and cpus <= before for cpus in feeding), feeding
    assert os.sched_getaffinity(0) == before


def test_a_vectorized_job_sends_its_accounted_equity_once(stack: Stack) -> None:
    job_id, final = run(stack, VECTORIZED, EngineKind.VECTORIZED, dt.date(2024, 3, 8))
    with_equity = [e for e in stack.store.events(job_id) if e.equity]
    assert len(with_equity) == 1
    points = with_equity[0].equity or []
    assert final.height == 5 * 390 and 400 < len(points) <= MAX_EQUITY_POINTS
    on_the_final_curve(points, final)
    assert tuple(points[0]) != tuple(points[-1]) and tuple(points[-1]) == tuple(final.row(-1))


def test_progress_equity_is_finite_and_bounded(stack: Stack) -> None:
    many = [(i, float(i)) for i in range(3 * MAX_EQUITY_POINTS + 7)]
    thinned = equity_points([*many, (10**13, math.nan), (10**13 + 1, math.inf)])
    assert len(thinned) == MAX_EQUITY_POINTS
    assert thinned[-1] == [len(many) - 1, float(len(many) - 1)]
    assert [ts for ts, _ in thinned] == sorted({ts for ts, _ in thinned})
    spec = BacktestSpec(dataset="sample", universe=["AAPL"], start=dt.date(2024, 3, 4),
                        end=dt.date(2024, 3, 4))
    store = stack.store  # a job in the store only (not queued): the worker never sees it
    job_id = store.create_job(spec=spec, researcher="t", bundle=b"-", bundle_sha256="0" * 64,
                              data_version=None)
    attempt = store.start_attempt(job_id, "test-worker")
    assert attempt is not None
    store.set_progress(job_id, attempt, 0.5, "half", [(1, 2.5), (2, math.nan), (3, 3.5)])
    store.set_progress(job_id, attempt, 0.6, "more", many)
    store.set_progress(job_id, attempt, 0.7, "none")
    events = [e for e in store.events(job_id) if e.kind == "progress"]
    assert [e.equity for e in events[:1]] == [[(1, 2.5), (3, 3.5)]]
    assert len(events[1].equity or []) == MAX_EQUITY_POINTS and events[2].equity is None
    assert store.finish(job_id, attempt, JobStatus.CANCELLED, reason="test")
