"""The store outlives its database connections: after PostgreSQL drops them (a restart,
an idle cut), the next call works instead of failing on a dead pooled connection."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from tests.pgkit import terminate_other_connections

from pitwall.models import BacktestSpec, JobStatus
from pitwall_executor.jobs.store import MetadataStore

SPEC = BacktestSpec(dataset="sample", universe=["AAPL"], start=dt.date(2024, 1, 2),
                    end=dt.date(2024, 1, 5))


def test_the_store_replaces_connections_postgresql_dropped(pg_url: str) -> None:
    store = MetadataStore(pg_url)
    job = store.create_job(spec=SPEC, researcher="ada", bundle=b"zip", bundle_sha256="a" * 64,
                           data_version=1)
    assert store.get(job).status is JobStatus.PENDING  # a pooled autocommit reader
    assert store.list_jobs() != []  # a pooled writer connection
    plain = sa.create_engine(pg_url)  # a pool as the store had it before: no pre-ping
    with plain.connect() as conn:
        conn.execute(sa.text("SELECT 1"))

    assert terminate_other_connections(pg_url) >= 3

    # The control: a pool that hands out what it holds fails on the dead connection,
    # so the store's calls below really meet dead connections in their pools.
    with pytest.raises(sa.exc.OperationalError), plain.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    plain.dispose()
    store.ping()
    assert store.get(job).status is JobStatus.PENDING
    assert store.start_attempt(job, "w1") == 1
    assert [v.status for v in store.list_jobs()] == [JobStatus.RUNNING]
    store.close()


def test_two_first_submissions_of_one_bundle_both_succeed(pg_url: str) -> None:
    """A bundle inserted by a transaction not yet committed: the second submission of the
    same bundle waits for it and then succeeds (a check-then-insert failed on the key)."""
    import threading

    from pitwall_executor.jobs.schema import bundles

    store = MetadataStore(pg_url)
    store.list_jobs()  # the schema exists
    first = sa.create_engine(pg_url)
    sha = "b" * 64
    results: list[object] = []
    with first.connect() as conn:
        tx = conn.begin()
        conn.execute(bundles.insert().values(sha256=sha, data=b"zip",
                                             created_at=dt.datetime.now(dt.UTC)))

        def second() -> None:
            try:
                results.append(store.create_job(spec=SPEC, researcher="ada", bundle=b"zip",
                                                 bundle_sha256=sha, data_version=1))
            except Exception as exc:  # the assertion below shows it
                results.append(exc)

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(1.0)
        assert thread.is_alive()  # blocked on the first transaction's row
        tx.commit()
        thread.join(10)
    first.dispose()
    assert len(results) == 1 and isinstance(results[0], str), results
    assert store.get(str(results[0])).status is JobStatus.PENDING
    store.close()
