"""The API's status read on PostgreSQL is awaited on the IOLoop (``AsyncStatusReader``):
it reads the same row the store's ``get`` reads, every time (no cache), survives
PostgreSQL dropping its connections, and keeps to its connection cap. And ``pitwall
api``'s start-up freezes the heap it built. Submissions run on their own few threads
and a status read still sees each change of state at once."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from apikit import STRATEGY, Api, bundle_bytes
from tests.pgkit import terminate_other_connections

from pitwall.models import BacktestSpec, JobStatus
from pitwall_executor.cli.serve import freeze_startup_heap
from pitwall_executor.jobs.errors import JobNotFoundError
from pitwall_executor.jobs.store import AsyncStatusReader, MetadataStore

SPEC = BacktestSpec(dataset="sample", universe=["AAPL"], start=dt.date(2024, 1, 2),
                    end=dt.date(2024, 1, 5))


def _job(store: MetadataStore) -> str:
    return store.create_job(spec=SPEC, researcher="ada", bundle=b"zip",
                            bundle_sha256="a" * 64, data_version=1)


def _reader(store: MetadataStore, **kwargs: int) -> AsyncStatusReader:
    reader = store.status_reader(**kwargs)
    assert reader is not None
    return reader


@pytest.mark.postgres
def test_the_reader_reads_the_row_the_store_reads_at_every_state(pg_url: str) -> None:
    store = MetadataStore(pg_url)
    reader = _reader(store)
    job = _job(store)

    async def read() -> None:
        assert await reader.get(job) == store.get(job)

    try:
        asyncio.run(read())  # PENDING
        attempt = store.start_attempt(job, "w1")
        assert attempt == 1
        store.set_progress(job, attempt, 0.5, "half way")
        asyncio.run(read())  # RUNNING, with progress: read again, not remembered
        assert store.get(job).progress == 0.5
        store.finish(job, attempt, JobStatus.FAILED, reason="boom")
        asyncio.run(read())
        assert store.get(job).status is JobStatus.FAILED

        async def missing() -> None:
            await reader.get(str(uuid.uuid4()))

        with pytest.raises(JobNotFoundError):
            asyncio.run(missing())
    finally:
        reader.close()
        store.close()


@pytest.mark.postgres
def test_the_reader_replaces_connections_postgresql_dropped(pg_url: str) -> None:
    store = MetadataStore(pg_url)
    reader = _reader(store)
    job = _job(store)

    async def status() -> JobStatus:
        return (await reader.get(job)).status

    try:
        assert asyncio.run(status()) is JobStatus.PENDING  # leaves an idle connection
        [dead] = reader._idle
        terminate_other_connections(pg_url)
        assert asyncio.run(status()) is JobStatus.PENDING
        assert dead.closed and dead not in reader._idle  # met, dropped, read again
    finally:
        reader.close()
        store.close()


@pytest.mark.postgres
def test_the_reader_keeps_to_its_connection_cap(pg_url: str) -> None:
    store = MetadataStore(pg_url)
    reader = _reader(store, max_connections=3)
    jobs = [_job(store) for _ in range(5)]

    async def burst() -> list[str]:
        views = await asyncio.gather(*(reader.get(jobs[i % 5]) for i in range(60)))
        return [v.id for v in views]

    try:
        assert asyncio.run(burst()) == [jobs[i % 5] for i in range(60)]
        assert 1 <= len(reader._idle) <= 3
        reader.close()
        assert not reader._idle
    finally:
        store.close()


@pytest.mark.postgres
def test_a_down_database_is_an_outage_not_a_bug(pg_url: str) -> None:
    store = MetadataStore(pg_url)
    down = store.engine.url.set(port=1).render_as_string(hide_password=False)
    reader = _reader(store)
    reader._conninfo = down.replace("postgresql+psycopg", "postgresql")

    async def read() -> None:
        await reader.get(str(uuid.uuid4()))

    try:
        with pytest.raises(sa.exc.OperationalError):
            asyncio.run(read())
    finally:
        store.close()


def test_sqlite_has_no_async_reader(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path}/pitwall.db")
    try:
        assert store.status_reader() is None  # the API reads on its read pool there
    finally:
        store.close()


def test_startup_freezes_the_heap() -> None:
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_status_read_sees_each_change_of_state_at_once(api: Api) -> None:
    """Over HTTP, on SQLite (read pool) and PostgreSQL (the reader on the IOLoop)."""
    # Distinct bundles: concurrent first inserts of one bundle race on SQLite.
    bundles = [bundle_bytes(STRATEGY + f"\n# run {i}\n") for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:  # through the 2 submission threads
        answers = list(pool.map(lambda b: api.submit(bundle=b), bundles))
    assert [a.status_code for a in answers] == [202] * 8
    job = answers[0].json()["id"]
    store = api.stack.store

    def status() -> str:
        res = api.get(f"/v1/backtests/{job}")
        assert res.status_code == 200, res.text
        return str(res.json()["status"])

    assert status() == "PENDING"
    attempt = store.start_attempt(job, "test-worker")
    assert attempt is not None
    assert status() == "RUNNING"
    store.finish(job, attempt, JobStatus.FAILED, reason="boom")
    assert status() == "FAILED"
    assert api.get(f"/v1/backtests/{job}", "bob").status_code == 404
