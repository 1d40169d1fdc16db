from __future__ import annotations

import datetime as dt

import pytest

from pitwall.models import BacktestSpec, JobStatus, Metrics
from pitwall_executor.jobs.queries import StaleAttempt
from pitwall_executor.jobs.store import JobNotFoundError, MetadataStore

SPEC = BacktestSpec(dataset="sample", universe=["AAPL"], start=dt.date(2024, 1, 2),
                    end=dt.date(2024, 1, 5))
METRICS = Metrics(total_return=0.1, cagr=0.2, annual_volatility=0.3, sharpe=1.5, sortino=2.0,
                  max_drawdown=-0.05, turnover=3.0, exposure=0.9, n_days=4, n_bars=1560,
                  final_equity=1.1e6)


@pytest.fixture
def store(db_url: str) -> MetadataStore:
    return MetadataStore(db_url)


def _job(store: MetadataStore) -> str:
    return store.create_job(spec=SPEC, researcher="ada", bundle=b"zip", bundle_sha256="a" * 64,
                            data_version=3)


def test_lifecycle_records_attempt_metrics_and_events(store: MetadataStore) -> None:
    job = _job(store)
    assert store.get(job).status is JobStatus.PENDING
    attempt = store.start_attempt(job, "w1")
    assert attempt == 1
    assert store.get(job).status is JobStatus.RUNNING
    store.set_progress(job, attempt, 0.5, "half")
    assert store.finish(job, attempt, JobStatus.COMPLETED, metrics=METRICS,
                        artifact_rows=[{"name": "report.html", "uri": "file:///r",
                                        "sha256": "b" * 64, "size": 10}])
    view = store.get(job)
    assert view.status is JobStatus.COMPLETED and view.metrics == METRICS
    assert view.progress == 1.0 and view.data_version == 3 and view.spec == SPEC
    assert view.finished_at is not None and view.finished_at.tzinfo is not None
    assert list(store.artifacts(job)) == ["report.html"]
    kinds = [(e.kind, e.status) for e in store.events(job)]
    assert kinds == [("status", JobStatus.PENDING), ("status", JobStatus.RUNNING),
                     ("progress", None), ("status", JobStatus.COMPLETED)]
    assert [e.seq for e in store.events(job, after=2)] == [3, 4]


def test_a_job_is_started_once_and_a_terminal_state_is_final(store: MetadataStore) -> None:
    job = _job(store)
    assert store.start_attempt(job, "w1") == 1
    assert store.start_attempt(job, "w2") is None
    assert store.finish(job, 1, JobStatus.FAILED, reason="boom")
    assert not store.finish(job, 1, JobStatus.COMPLETED, metrics=METRICS)
    assert store.cancel(job) is JobStatus.FAILED
    view = store.get(job)
    assert view.status is JobStatus.FAILED and view.reason == "boom" and view.metrics is None


def test_metrics_shown_while_running_are_replaced_at_the_end_and_lost_with_the_attempt(
        store: MetadataStore) -> None:
    early = METRICS.model_copy(update={"sharpe": 1.0})
    job = _job(store)
    assert store.start_attempt(job, "w1") == 1
    store.set_progress(job, 1, 0.9, "metrics ready", metrics=early)
    view = store.get(job)
    assert view.status is JobStatus.RUNNING and view.metrics == early
    assert store.events(job)[-1].data == {"progress": 0.9, "message": "metrics ready",
                                          "metrics": True}
    store.set_progress(job, 2, 0.9, "a stale attempt", metrics=METRICS)  # fenced
    assert store.get(job).metrics == early
    # The terminal commit replaces them (one row), with the final figures or with none.
    assert store.finish(job, 1, JobStatus.COMPLETED, metrics=METRICS)
    assert store.get(job).metrics == METRICS
    cancelled = _job(store)
    assert store.start_attempt(cancelled, "w1") == 1
    store.set_progress(cancelled, 1, 0.9, "metrics ready", metrics=early)
    assert store.finish(cancelled, 1, JobStatus.CANCELLED, reason="cancelled")
    assert store.get(cancelled).metrics is None
    # A job taken back from its worker (handed back, or lost) runs again without them.
    for take_back in ("hand_back", "recover_lost"):
        other = _job(store)
        assert store.start_attempt(other, "w1") == 1
        store.set_progress(other, 1, 0.9, "metrics ready", metrics=early)
        if take_back == "hand_back":
            assert store.hand_back(other, 1)
        else:
            later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
            assert store.recover_lost(StaleAttempt(other, 1, "w1"), silent_since=later,
                                      max_attempts=3) is JobStatus.PENDING
        view = store.get(other)
        assert view.status is JobStatus.PENDING and view.metrics is None, take_back


def test_a_stale_attempt_cannot_complete(store: MetadataStore) -> None:
    job = _job(store)
    assert store.start_attempt(job, "w1") == 1
    assert not store.finish(job, 2, JobStatus.COMPLETED, metrics=METRICS)
    assert store.get(job).status is JobStatus.RUNNING


def test_cancel_pending_is_immediate_and_running_is_flagged(store: MetadataStore) -> None:
    pending, running = _job(store), _job(store)
    assert store.cancel(pending) is JobStatus.CANCELLED
    assert store.start_attempt(pending, "w") is None
    store.start_attempt(running, "w")
    assert not store.cancel_requested(running)
    assert store.cancel(running) is JobStatus.RUNNING
    assert store.cancel_requested(running)


def test_list_filters_and_unknown_job(store: MetadataStore) -> None:
    a, b = _job(store), _job(store)
    store.cancel(a)
    assert [v.id for v in store.list_jobs(status=JobStatus.CANCELLED)] == [a]
    assert {v.id for v in store.list_jobs(researcher="ada")} == {a, b}
    assert store.list_jobs(researcher="bob") == []
    with pytest.raises(JobNotFoundError):
        store.get("nope")


def test_bundles_are_stored_once_by_hash(store: MetadataStore) -> None:
    _job(store)
    _job(store)
    assert store.bundle("a" * 64) == b"zip"
