"""Migrations build exactly the tables the code declares, and the database itself refuses
illegal job transitions, whatever SQL a buggy caller sends."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pitwall.models import BacktestSpec, JobStatus, Metrics
from pitwall_executor.jobs import migrations
from pitwall_executor.jobs.schema import metadata
from pitwall_executor.jobs.store import MetadataStore

SPEC = BacktestSpec(dataset="sample", universe=["AAPL"], start=dt.date(2024, 1, 2),
                    end=dt.date(2024, 1, 5))
METRICS = Metrics(total_return=0.1, cagr=0.2, annual_volatility=0.3, sharpe=1.5, sortino=2.0,
                  max_drawdown=-0.05, turnover=3.0, exposure=0.9, n_days=4, n_bars=1560,
                  final_equity=1.1e6)


def test_upgrade_on_an_empty_database_matches_the_metadata(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        assert migrations.current(conn) is None
    MetadataStore(db_url).close()
    with engine.connect() as conn:
        assert migrations.current(conn) == migrations.head()
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    MetadataStore(db_url).close()  # a second start is a no-op
    engine.dispose()


def test_a_database_made_without_migrations_is_refused_with_a_way_out(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/legacy.db"
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    with pytest.raises(RuntimeError, match="before Pitwall used migrations"):
        MetadataStore(url)
    engine.dispose()


@pytest.fixture
def store(db_url: str) -> MetadataStore:
    return MetadataStore(db_url)


def _job(store: MetadataStore) -> str:
    return store.create_job(spec=SPEC, researcher="ada", bundle=b"zip", bundle_sha256="a" * 64,
                            data_version=1)


def _refused(store: MetadataStore, sql: str, **params: object) -> str:
    with pytest.raises(sa.exc.IntegrityError) as info, store.engine.begin() as conn:
        conn.execute(sa.text(sql), params)
    return str(info.value)


def _set(store: MetadataStore, job: str, sql: str) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE jobs SET {sql} WHERE id = :id"), {"id": job})


def test_terminal_states_are_final(store: MetadataStore) -> None:
    for final in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.TIMED_OUT):
        job = _job(store)
        attempt = store.start_attempt(job, "w")
        assert attempt == 1
        assert store.finish(job, attempt, final,
                            metrics=METRICS if final is JobStatus.COMPLETED else None)
        for target in ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"):
            if target != final.value:
                msg = _refused(store, f"UPDATE jobs SET status = '{target}' WHERE id = :id",
                               id=job)
                assert "terminal state is final" in msg
        _refused(store, "UPDATE jobs SET attempt = attempt + 1 WHERE id = :id", id=job)
    cancelled = _job(store)
    assert store.cancel(cancelled) is JobStatus.CANCELLED
    _refused(store, "UPDATE jobs SET status = 'PENDING' WHERE id = :id", id=cancelled)
    _set(store, cancelled, "progress = 0.5")  # other columns stay writable


def test_running_goes_back_to_pending_only_through_recovery(store: MetadataStore) -> None:
    job = _job(store)
    assert store.start_attempt(job, "w") == 1
    msg = _refused(store, "UPDATE jobs SET status = 'PENDING' WHERE id = :id", id=job)
    assert "recovery path" in msg
    _refused(store, "UPDATE jobs SET status = 'PENDING', recovered = recovered + 2 "
                    "WHERE id = :id", id=job)
    _refused(store, "UPDATE jobs SET recovered = recovered + 1 WHERE id = :id", id=job)
    _set(store, job, "status = 'PENDING', recovered = recovered + 1")  # the recovery path
    assert store.get(job).status is JobStatus.PENDING


def test_pending_cannot_finish_and_attempts_move_only_on_start(store: MetadataStore) -> None:
    job = _job(store)
    for target in ("COMPLETED", "TIMED_OUT"):
        msg = _refused(store, f"UPDATE jobs SET status = '{target}' WHERE id = :id", id=job)
        assert "without running" in msg
    _refused(store, "UPDATE jobs SET status = 'RUNNING' WHERE id = :id", id=job)
    _refused(store, "UPDATE jobs SET status = 'RUNNING', attempt = attempt + 2 WHERE id = :id",
             id=job)
    _refused(store, "UPDATE jobs SET attempt = attempt + 1 WHERE id = :id", id=job)
    _refused(store, "UPDATE jobs SET researcher = 'eve' WHERE id = :id", id=job)
    _refused(store, "UPDATE jobs SET kind = 'sweep' WHERE id = :id", id=job)
    assert store.start_attempt(job, "w") == 1
    _refused(store, "UPDATE jobs SET attempt = 5 WHERE id = :id", id=job)
    view = store.get(job)
    assert view.status is JobStatus.RUNNING and view.attempt == 1


def test_jobs_are_born_pending_and_metrics_need_the_current_attempt_running_or_completed(
    store: MetadataStore,
) -> None:
    msg = _refused(store, "INSERT INTO jobs (id, researcher, status, spec, bundle_sha256, "
                          "attempt, progress, cancel_requested, created_at, kind, priority, "
                          "recovered) VALUES ('x', 'ada', 'COMPLETED', '{}', 'a', 0, 0, "
                          "false, '2024-01-01', 'run', 0, 0)")
    assert "created PENDING" in msg
    insert = "INSERT INTO metrics (job_id, attempt, metrics) VALUES (:id, :attempt, '{}')"
    job = _job(store)
    assert "current attempt" in _refused(store, insert, id=job, attempt=0)  # PENDING
    assert store.start_attempt(job, "w") == 1
    _refused(store, insert, id=job, attempt=2)  # not the running attempt
    assert store.finish(job, 1, JobStatus.COMPLETED, metrics=METRICS)
    assert store.get(job).metrics == METRICS
    failed = _job(store)
    assert store.start_attempt(failed, "w") == 1
    assert store.finish(failed, 1, JobStatus.FAILED, reason="boom")
    _refused(store, insert, id=failed, attempt=1)
