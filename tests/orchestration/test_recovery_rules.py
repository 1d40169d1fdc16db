"""Recovery, reconciliation, quota and sweeps at the database level (both databases)."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
import time

import pytest
import sqlalchemy as sa

from pitwall.models import BacktestSpec, JobStatus, Metrics
from pitwall_executor.jobs.queue import MemoryQueue
from pitwall_executor.jobs.schema import attempts
from pitwall_executor.jobs.store import AttemptOwner, MetadataStore, ResearcherAtQuotaError
from pitwall_executor.jobs.sweeps import SweepError, expand_grid
from pitwall_executor.orchestration.recovery import (
    RecoveryLoop,
    reconcile,
    recover_at_startup,
    recover_stale,
)
from pitwall_executor.sandbox import owner

SPEC = BacktestSpec(dataset="sample", universe=["AAPL"], start=dt.date(2024, 1, 2),
                    end=dt.date(2024, 1, 5), params={"fast": 5})
METRICS = Metrics(total_return=0.1, cagr=0.2, annual_volatility=0.3, sharpe=1.5, sortino=2.0,
                  max_drawdown=-0.05, turnover=3.0, exposure=0.9, n_days=4, n_bars=1560,
                  final_equity=1.1e6)


@pytest.fixture
def store(db_url: str) -> MetadataStore:
    return MetadataStore(db_url)


def _job(store: MetadataStore, researcher: str = "ada") -> str:
    return store.create_job(spec=SPEC, researcher=researcher, bundle=b"zip",
                            bundle_sha256="a" * 64, data_version=1)


def _silence(store: MetadataStore, job: str, seconds: float = 60) -> None:
    with store.engine.begin() as conn:
        conn.execute(attempts.update().where(attempts.c.job_id == job).values(
            heartbeat_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)))


def test_a_silent_attempt_is_recovered_fenced_and_poison_fails(store: MetadataStore) -> None:
    job = _job(store)
    assert store.start_attempt(job, "w1") == 1
    assert recover_stale(store, older_than=30, max_attempts=3) == []  # still beating
    _silence(store, job)
    [rec] = recover_stale(store, older_than=30, max_attempts=3)
    assert (rec.job_id, rec.attempt, rec.status) == (job, 1, JobStatus.PENDING)
    assert store.beat(job, 1) == "lost"
    assert not store.finish(job, 1, JobStatus.COMPLETED, metrics=METRICS)  # stale worker
    for attempt in (2, 3):
        assert store.start_attempt(job, f"w{attempt}") == attempt
        assert store.beat(job, attempt) == "live"
        _silence(store, job)
        [rec] = recover_stale(store, older_than=30, max_attempts=3)
    view = store.get(job)
    assert rec.status is JobStatus.FAILED and view.status is JobStatus.FAILED
    assert view.reason is not None and view.reason.startswith("worker died 3 times")
    assert view.metrics is None


def test_a_graceful_hand_back_is_not_a_death(store: MetadataStore) -> None:
    job = _job(store)
    for attempt in (1, 2, 3, 4):
        assert store.start_attempt(job, "w") == attempt
        assert store.hand_back(job, attempt)
        assert not store.hand_back(job, attempt)
    assert store.get(job).status is JobStatus.PENDING


def test_reconcile_enqueues_pending_jobs_the_queue_lost(store: MetadataStore) -> None:
    queued, lost, running = _job(store), _job(store), _job(store)
    q = MemoryQueue()
    q.enqueue(queued)
    store.start_attempt(running, "w")
    assert reconcile(store, q) == [lost]
    assert sorted(q.queued_ids()) == sorted([queued, lost])
    assert reconcile(store, q) == []
    _silence(store, running)
    RecoveryLoop(store, q, stale_after_s=30, max_attempts=3).tick()
    assert sorted(q.queued_ids()) == sorted([queued, lost, running])


def _sweep(store: MetadataStore, researcher: str, n: int) -> list[str]:
    """The ``n`` child runs of a fresh sweep of ``researcher``."""
    _, kids = store.create_sweep(spec=SPEC, researcher=researcher, bundle=b"zip",
                                 bundle_sha256="a" * 64, data_version=1,
                                 grid={"fast": list(range(n))})
    return kids


def test_quota_is_checked_atomically_with_the_start(store: MetadataStore) -> None:
    (a1, a2), (b1,) = _sweep(store, "ada", 2), _sweep(store, "bob", 1)
    assert store.start_attempt(a1, "w", max_running=1) == 1
    with pytest.raises(ResearcherAtQuotaError, match="already has 1 sweep runs running"):
        store.start_attempt(a2, "w", max_running=1)
    assert store.get(a2).status is JobStatus.PENDING
    assert store.start_attempt(b1, "w", max_running=1) == 1
    assert store.finish(a1, 1, JobStatus.COMPLETED, metrics=METRICS)
    assert store.start_attempt(a2, "w", max_running=1) == 1


def test_the_quota_counts_and_holds_only_sweep_runs(store: MetadataStore) -> None:
    kids = _sweep(store, "ada", 3)
    solo = [_job(store, "ada") for _ in range(3)]
    # Interactive runs never wait for the quota, however many the researcher has running.
    for job in solo[:2]:
        assert store.start_attempt(job, "w", max_running=1) == 1
    # ...and do not use it up: the first sweep run still starts beside them.
    assert store.start_attempt(kids[0], "w", max_running=1) == 1
    with pytest.raises(ResearcherAtQuotaError):
        store.start_attempt(kids[1], "w", max_running=1)
    # A sweep at its quota does not hold back the researcher's next interactive run.
    assert store.start_attempt(solo[2], "w", max_running=1) == 1
    running = {v.id for v in store.list_jobs(limit=100)
               if v.status is JobStatus.RUNNING and v.kind == "backtest"}
    assert running == {*solo, kids[0]}
    assert store.finish(kids[0], 1, JobStatus.COMPLETED, metrics=METRICS)
    assert store.start_attempt(kids[1], "w", max_running=1) == 1


def test_racing_starts_never_exceed_the_quota(store: MetadataStore) -> None:
    ids = _sweep(store, "ada", 8)
    started: list[int] = []
    barrier = threading.Barrier(len(ids))

    def start(job: str) -> None:
        barrier.wait()
        try:
            if store.start_attempt(job, "w", max_running=2):
                started.append(1)
        except ResearcherAtQuotaError:
            pass
        except sa.exc.OperationalError:  # SQLite: a writer that waited too long
            pass

    threads = [threading.Thread(target=start, args=(j,)) for j in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    running = [v for v in store.list_jobs(limit=100)
               if v.status is JobStatus.RUNNING and v.kind == "backtest"]
    assert len(running) == len(started) and 1 <= len(running) <= 2


def test_grid_expansion_is_checked() -> None:
    assert expand_grid({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    for bad in ({}, {"a": []}, {"not ok": [1]}, {"a": list(range(100)), "b": list(range(11))}):
        with pytest.raises(SweepError):
            expand_grid(bad)


def test_a_sweep_aggregates_its_children(store: MetadataStore) -> None:
    parent, kids = store.create_sweep(spec=SPEC, researcher="ada", bundle=b"zip",
                                      bundle_sha256="a" * 64, data_version=1,
                                      grid={"fast": [5, 10], "slow": [60, 120]})
    assert len(kids) == 4 and store.get(parent).status is JobStatus.PENDING
    assert store.start_attempt(parent, "w") is None  # a parent is never run
    assert store.get(kids[0]).spec.params == {"fast": 5, "slow": 60}
    for i, kid in enumerate(kids):
        assert store.start_attempt(kid, "w") == 1
        assert store.get(parent).status is JobStatus.RUNNING
        ok = i != 3
        store.finish(kid, 1, JobStatus.COMPLETED if ok else JobStatus.FAILED,
                     metrics=METRICS if ok else None, reason=None if ok else "boom")
        view = store.get(parent)
        assert view.progress == pytest.approx((i + 1) / 4)
    view = store.get(parent)
    assert view.status is JobStatus.COMPLETED
    assert view.reason == "3 of 4 runs completed (1 failed)"
    rows = store.sweep_results(parent)
    assert [r.params for r in rows] == expand_grid({"fast": [5, 10], "slow": [60, 120]})
    assert [r.metrics is not None for r in rows] == [True, True, True, False]
    assert rows[3].status is JobStatus.FAILED and rows[3].reason == "boom"


def test_cancelling_a_sweep_cancels_its_children(store: MetadataStore) -> None:
    parent, kids = store.create_sweep(spec=SPEC, researcher="ada", bundle=b"zip",
                                      bundle_sha256="a" * 64, data_version=1,
                                      grid={"fast": [1, 2, 3]})
    assert store.start_attempt(kids[0], "w") == 1
    assert store.cancel(parent) is JobStatus.RUNNING  # one child still running
    assert store.cancel_requested(kids[0])
    assert {store.get(k).status for k in kids[1:]} == {JobStatus.CANCELLED}
    store.finish(kids[0], 1, JobStatus.CANCELLED, reason="cancelled by the researcher")
    view = store.get(parent)
    assert view.status is JobStatus.CANCELLED and view.progress == 1.0
    other, _ = store.create_sweep(spec=SPEC, researcher="ada", bundle=b"zip",
                                  bundle_sha256="a" * 64, data_version=1, grid={"fast": [1, 2]})
    assert store.cancel(other) is JobStatus.CANCELLED


def test_a_job_cancelled_while_running_is_not_rerun_after_recovery(store: MetadataStore) -> None:
    job = _job(store)
    assert store.start_attempt(job, "w") == 1
    assert store.cancel(job) is JobStatus.RUNNING
    _silence(store, job)
    recover_stale(store, older_than=30, max_attempts=3)
    assert store.start_attempt(job, "w2") is None
    assert store.get(job).status is JobStatus.CANCELLED


def _dead_process() -> AttemptOwner:
    """A process of this host that has exited: its pid and the start time it had."""
    proc = subprocess.Popen(["sleep", "30"])
    with open(f"/proc/{proc.pid}/stat", "rb") as fh:
        stat = fh.read()
    start = int(stat[stat.rfind(b")") + 2:].split()[19])
    proc.kill()
    proc.wait()
    return AttemptOwner(owner.host(), proc.pid, start)


def test_startup_recovery_takes_back_only_what_dead_workers_left(store: MetadataStore) -> None:
    me = owner.current()
    alive_here = AttemptOwner(owner.host(), me.pid, me.start)
    elsewhere = AttemptOwner("another-host", me.pid, me.start)
    dead_here = _dead_process()
    poison = _job(store)
    for attempt in (1, 2):
        assert store.start_attempt(poison, "w") == attempt
        _silence(store, poison)
        recover_stale(store, older_than=30, max_attempts=3)
    assert store.start_attempt(poison, "w", owner=dead_here) == 3
    jobs = {name: _job(store) for name in (
        "dead_here", "alive_here", "elsewhere_fresh", "elsewhere_silent", "unknown", "pending")}
    for name, who in (("dead_here", dead_here), ("alive_here", alive_here),
                      ("elsewhere_fresh", elsewhere), ("elsewhere_silent", elsewhere),
                      ("unknown", None)):
        assert store.start_attempt(jobs[name], "w", owner=who) == 1  # heartbeat: just now
    _silence(store, jobs["elsewhere_silent"])
    q = MemoryQueue()
    got = recover_at_startup(store, q, max_attempts=3, stale_after_s=30)
    # A dead process of this host at once, whatever its heartbeat; elsewhere, by silence.
    assert {(r.job_id, r.status) for r in got} == {
        (jobs["dead_here"], JobStatus.PENDING), (jobs["elsewhere_silent"], JobStatus.PENDING),
        (poison, JobStatus.FAILED)}
    for name in ("alive_here", "elsewhere_fresh", "unknown"):  # a live worker keeps its job
        assert store.get(jobs[name]).status is JobStatus.RUNNING
        assert store.beat(jobs[name], 1) == "live"
    assert sorted(q.queued_ids()) == sorted(
        [jobs["dead_here"], jobs["elsewhere_silent"], jobs["pending"]])
    assert store.get(poison).reason is not None
    assert store.start_attempt(jobs["dead_here"], "new-serve") == 2
    assert store.attempt_outcomes(jobs["dead_here"]) == ["LOST", None]


def test_recovery_waits_for_heartbeats_after_the_database_was_unreachable(
        store: MetadataStore) -> None:
    job = _job(store)
    assert store.start_attempt(job, "w", owner=AttemptOwner("another-host", 1, 1)) == 1
    _silence(store, job)  # as every heartbeat looks after an outage
    loop = RecoveryLoop(store, MemoryQueue(), stale_after_s=30, max_attempts=3)
    loop._db_back_at = None  # the last pass failed on the database
    loop.tick()
    assert store.get(job).status is JobStatus.RUNNING  # live workers get time to beat
    loop._db_back_at = time.monotonic() - 31
    loop.tick()
    assert store.get(job).status is JobStatus.PENDING
