"""The metadata store: researchers, jobs, attempts, metrics, artifacts and events.

SQLAlchemy Core on SQLite (embedded) or PostgreSQL (psycopg 3, production). The
database is the source of truth for job state. :class:`MetadataStore` is the only way
into it from outside this package; each of its methods is one transaction (or one
autocommit read) over the modules below it:

- ``jobs.schema``: the tables; ``jobs.events``: each job's event stream;
- ``jobs.sweeps``: a sweep parent as the aggregate of its children;
- ``jobs.transitions``: the job state machine (every change of state, fenced);
- ``jobs.queries``: the reads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa
from psycopg.rows import dict_row
from sqlalchemy.engine import Connection, Engine

from pitwall.models import BacktestSpec, JobStatus, JobView, Metrics, ProgressEvent
from pitwall_executor.jobs import events, queries, schema, sweeps, transitions
from pitwall_executor.jobs.errors import JobNotFoundError, ResearcherAtQuotaError
from pitwall_executor.jobs.migrations import upgrade
from pitwall_executor.jobs.queries import AttemptOwner, OpenAttempt, StaleAttempt
from pitwall_executor.jobs.schema import HANDED_BACK
from pitwall_executor.jobs.sweeps import SweepRow

_T = TypeVar("_T")

# The errors the store raises, and what it returns, are importable beside it.
__all__ = ["AsyncStatusReader", "AttemptOwner", "JobNotFoundError", "MetadataStore",
           "OpenAttempt", "ResearcherAtQuotaError", "StaleAttempt", "database_unreachable"]
CONNECT_TIMEOUT_S = 10  # a server that accepts but never answers (stopped, hung) fails here


def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached (down, restarting, a dead
    connection, the pool exhausted while every connection hangs), rather than a bug."""
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError)
    return isinstance(exc, sa.exc.TimeoutError | ConnectionError)


class MetadataStore:
    """Job state in a relational database (SQLite or PostgreSQL)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        # pool_pre_ping: a pooled connection that died with its server (PostgreSQL
        # restarted, an idle connection cut) is replaced before use, not handed to a
        # request that then fails.
        kwargs: dict[str, Any] = {"future": True, "pool_pre_ping": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        elif url.startswith("postgresql"):
            kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
        self.engine: Engine = sa.create_engine(url, **kwargs)
        # Single-statement reads (the API's status reads) on connections that stay in
        # autocommit: no BEGIN/COMMIT round trips and no reset when they go back to the pool,
        # and no pre-ping (a round trip of its own before every read; docs/benchmarks.md).
        # A read that meets a connection the server dropped runs once more on a fresh one.
        self._reader: Engine = sa.create_engine(url, isolation_level="AUTOCOMMIT",
                                                pool_reset_on_return=None,
                                                **{**kwargs, "pool_pre_ping": False})
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            sa.event.listen(self._reader, "connect", _sqlite_pragmas)
        if create:
            upgrade(self.engine)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def _read(self, query: Callable[..., _T], *args: Any) -> _T:
        """``query(conn, *args)``: one read-only statement (one statement is one snapshot).

        If the pooled connection was dead (PostgreSQL restarted, an idle connection cut),
        SQLAlchemy invalidates the pool's connections and the read runs once more on a
        fresh one: reads change nothing, so running one again is safe."""
        try:
            with self._reader.connect() as conn:
                return query(conn, *args)
        except sa.exc.DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
        with self._reader.connect() as conn:
            return query(conn, *args)

    def close(self) -> None:
        self.engine.dispose()
        self._reader.dispose()

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    # -- submissions --------------------------------------------------------------------
    def create_job(
        self, *, spec: BacktestSpec, researcher: str, bundle: bytes, bundle_sha256: str,
        data_version: int | None, priority: int = 0,
    ) -> str:
        """Insert a PENDING job and its bundle in one transaction; return its id."""
        job_id = str(uuid.uuid4())
        with self._tx() as conn:
            transitions.put_bundle(conn, bundle_sha256, bundle)
            transitions.create(conn, job_id, spec=spec, researcher=researcher,
                               bundle_sha256=bundle_sha256, data_version=data_version,
                               priority=priority)
        return job_id

    def create_sweep(self, *, spec: BacktestSpec, researcher: str, bundle: bytes,
                     bundle_sha256: str, data_version: int | None,
                     grid: dict[str, list[Any]]) -> tuple[str, list[str]]:
        """A sweep parent and one PENDING child per grid point: (parent id, child ids).

        Raises :class:`~pitwall_executor.jobs.sweeps.SweepError` (and writes nothing)
        for a grid that is not usable.
        """
        with self._tx() as conn:
            transitions.put_bundle(conn, bundle_sha256, bundle)
            return sweeps.insert_sweep(conn, spec=spec, researcher=researcher,
                                       bundle_sha256=bundle_sha256,
                                       data_version=data_version, grid=grid)

    def bundle(self, sha256: str) -> bytes:
        with self._tx() as conn:
            return queries.bundle_data(conn, sha256)

    # -- transitions (jobs.transitions) -------------------------------------------------
    def start_attempt(self, job_id: str, worker: str, *, max_running: int | None = None,
                      owner: AttemptOwner | None = None) -> int | None:
        """PENDING → RUNNING for a new attempt; None if the job is not PENDING any more.

        ``max_running`` is the per-researcher concurrency quota, and it is a quota on
        *sweep runs* (children of a sweep, the batch lane): a sweep child raises
        :class:`ResearcherAtQuotaError` (and changes nothing) when its researcher already
        has that many sweep children RUNNING, so one researcher's 500-run sweep cannot
        hold every worker slot. Interactive runs (submitted one by one) neither count
        nor wait: they already go first in the queue, and a researcher's own sweep must
        not block their next interactive run. The count and the start are one atomic
        step: an advisory lock per researcher on PostgreSQL, the single writer on SQLite.

        ``owner`` (host, pid, pid start time) is recorded with the attempt, so recovery
        on the same host can tell at once whether its worker is dead.
        """
        with self._tx() as conn:
            return transitions.start(conn, job_id, worker, max_running, owner)

    def beat(self, job_id: str, attempt: int) -> str:
        """A worker's heartbeat for its attempt: ``"live"``, ``"cancel"`` (the researcher
        asked to stop it) or ``"lost"`` (the attempt was recovered or ended: stop working)."""
        with self._tx() as conn:
            return transitions.beat(conn, job_id, attempt)

    def hand_back(self, job_id: str, attempt: int, *, outcome: str = HANDED_BACK,
                  reason: str = "the worker shut down before the job ended") -> bool:
        """RUNNING → PENDING through the recovery path (``recovered + 1``), fenced by
        attempt; the attempt ends with ``outcome``. False if this attempt is not current."""
        with self._tx() as conn:
            return transitions.hand_back(conn, job_id, attempt, outcome, reason)

    def finish(
        self, job_id: str, attempt: int, status: JobStatus, *, reason: str | None = None,
        metrics: Metrics | None = None, artifact_rows: Sequence[dict[str, Any]] = (),
    ) -> bool:
        """RUNNING → a terminal state, fenced by attempt; False if this attempt is stale."""
        if not status.terminal:
            raise ValueError(f"{status} is not a terminal state")
        with self._tx() as conn:
            return transitions.finish(conn, job_id, attempt, status, reason=reason,
                                      metrics=metrics, artifact_rows=artifact_rows)

    def add_artifacts(self, job_id: str, attempt: int, artifact_rows: Sequence[dict[str, Any]],
                      event: dict[str, Any]) -> bool:
        """Record files an ended attempt wrote after its commit (the HTML report…) and an
        ``artifacts`` event with ``event`` as its data; False if ``attempt`` is not the
        job's. Idempotent: rows already recorded (a retried commit) are left as they are."""
        with self._tx() as conn:
            current = conn.execute(sa.select(schema.jobs.c.attempt)
                                   .where(schema.jobs.c.id == job_id)).scalar_one_or_none()
            if current != attempt:
                return False
            have = set(queries.artifacts_of(conn, job_id))
            for row in artifact_rows:
                if row["name"] not in have:
                    conn.execute(schema.artifacts.insert().values(job_id=job_id, **row))
            if not have.issuperset(r["name"] for r in artifact_rows) or not artifact_rows:
                events.append(conn, job_id, "artifacts", event)
            return True

    def recover_lost(self, stale: StaleAttempt, *, silent_since: dt.datetime,
                     max_attempts: int) -> JobStatus | None:
        """Take a job back from a worker that stopped heartbeating before ``silent_since``.

        The attempt ends ``LOST``; the job goes back to PENDING through the recovery path,
        or to FAILED once ``max_attempts`` of its attempts were lost (a poison job). Fenced
        twice: None (nothing changed) if the attempt ended or heartbeat since.
        """
        with self._tx() as conn:
            return transitions.recover_lost(conn, stale, silent_since, max_attempts)

    def cancel(self, job_id: str, reason: str = "cancelled by the researcher") -> JobStatus:
        """PENDING → CANCELLED now; a RUNNING job is flagged and its worker kills it.

        Cancelling a sweep cancels its children; the sweep ends when they all have.
        """
        with self._tx() as conn:
            transitions.cancel(conn, job_id, reason)
        return self.get(job_id).status

    def set_progress(self, job_id: str, attempt: int, progress: float, message: str,
                     equity: Sequence[tuple[int, float]] = (),
                     metrics: Metrics | None = None) -> None:
        """Record the running attempt's progress; ``equity`` are the new ``(ts_ms, value)``
        points of its running equity curve (non-finite ones dropped, thinned to at most
        :data:`~pitwall.models.MAX_EQUITY_POINTS`), carried by the progress event;
        ``metrics`` are shown with the job from now on (``data.metrics`` of the event is
        true), until the attempt's terminal commit replaces them."""
        payload: dict[str, Any] = {"progress": progress, "message": message}
        points = events.equity_points(equity)
        if points:
            payload["equity"] = points
        if metrics is not None:
            payload["metrics"] = True
        with self._tx() as conn:
            transitions.set_progress(conn, job_id, attempt, progress, payload, metrics)

    # -- reads (jobs.queries) -----------------------------------------------------------
    def get(self, job_id: str) -> JobView:
        """One job with its metrics: one statement, built once, run in autocommit."""
        return self._read(queries.job_view, job_id)

    def status_reader(self, *, max_connections: int = 8) -> AsyncStatusReader | None:
        """:meth:`get` for an asyncio event loop, on PostgreSQL; None on SQLite (no async
        driver there: call :meth:`get` on a thread)."""
        if self.engine.dialect.name != "postgresql":
            return None
        # The statement and row mapping of queries.job_view, rendered for psycopg.
        sql = str(queries.GET_VIEW.compile(dialect=self.engine.dialect))
        conninfo = self.engine.url.set(drivername="postgresql").render_as_string(
            hide_password=False)
        return AsyncStatusReader(conninfo, sql, max_connections=max_connections)

    def list_jobs(
        self, *, researcher: str | None = None, status: JobStatus | None = None, limit: int = 50,
    ) -> list[JobView]:
        with self._tx() as conn:
            return queries.list_jobs(conn, researcher=researcher, status=status, limit=limit)

    def query_jobs(
        self, *, researcher: str | None = None, status: JobStatus | None = None,
        since: dt.datetime | None = None, until: dt.datetime | None = None,
        before: tuple[dt.datetime, str] | None = None, limit: int = 50,
    ) -> list[JobView]:
        """Jobs newest first; ``before`` = (created_at, id) of the last row of the previous page."""
        with self._tx() as conn:
            return queries.query_jobs(conn, researcher=researcher, status=status, since=since,
                                      until=until, before=before, limit=limit)

    def sweep_results(self, parent_id: str) -> list[SweepRow]:
        """A sweep's results table: each child's parameters, status and metrics."""
        with self._tx() as conn:
            return sweeps.sweep_results(conn, parent_id)

    def count_by_status(self) -> dict[str, int]:
        """How many jobs are in each status (for the /metrics gauge)."""
        with self._tx() as conn:
            return queries.count_by_status(conn)

    def cancel_requested(self, job_id: str) -> bool:
        with self._tx() as conn:
            return queries.cancel_requested(conn, job_id)

    def artifacts(self, job_id: str) -> dict[str, dict[str, Any]]:
        with self._tx() as conn:
            return queries.artifacts_of(conn, job_id)

    def events(self, job_id: str, after: int = 0) -> list[ProgressEvent]:
        with self._tx() as conn:
            return events.read(conn, job_id, after)

    def attempt_outcomes(self, job_id: str) -> list[str | None]:
        """How each attempt of a job ended, oldest first: a JobStatus value, LOST,
        HANDED_BACK, INFRA_FAILED, or None while it runs."""
        return self._read(queries.attempt_outcomes, job_id)

    def open_attempts(self) -> list[OpenAttempt]:
        """The open attempt of every RUNNING job, with its heartbeat and its process."""
        return self._read(queries.open_attempts)

    def pending_runs(self) -> dict[str, int]:
        """Every PENDING job a worker should run, with its queue priority."""
        return self._read(queries.pending_runs)

    def priority_of(self, job_id: str) -> int:
        """The queue priority a job was submitted with."""
        return self._read(queries.priority_of, job_id)

    def data_versions(self, dataset: str) -> set[int]:
        """Versions of ``dataset`` referenced by any stored job, whatever its status."""
        return self._read(queries.data_versions, dataset)


class AsyncStatusReader:
    """The status read (:meth:`MetadataStore.get`) awaited on the event loop, for the API.

    PostgreSQL through psycopg's async mode on a few autocommit connections of its own: a
    read costs no thread hop (no pool thread to wake, no GIL hand-off back to the loop),
    each of which is a wait for a CPU on a loaded host (docs/benchmarks.md, "API status
    reads"). Every call reads the row: nothing is cached, so any number of API processes
    answer alike. Use it from one event loop at a time. A read that meets a dead
    connection (PostgreSQL restarted, an idle connection cut) drops the idle ones and runs
    once more on a fresh one, like :meth:`MetadataStore._read`; errors are raised as
    SQLAlchemy's, so :func:`database_unreachable` tells an outage from a bug either way.
    """

    def __init__(self, conninfo: str, sql: str, *, max_connections: int = 8) -> None:
        self._conninfo = conninfo
        self._sql = sql
        self._idle: list[psycopg.AsyncConnection[dict[str, Any]]] = []
        self._slots = asyncio.Semaphore(max_connections)  # bound to a loop on first wait

    async def get(self, job_id: str) -> JobView:
        """One job with its metrics; :class:`JobNotFoundError` if there is none."""
        params = {"job_id": job_id}
        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            try:
                try:
                    row = await self._fetch(conn, params)
                except psycopg.OperationalError:
                    if conn is None:
                        raise
                    self.close()  # its idle siblings died with the server too
                    row = await self._fetch(None, params)
            except psycopg.Error as exc:
                raise _sa_error(self._sql, params, exc) from exc
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r}")
        return queries.view_of(row)

    async def _fetch(self, conn: psycopg.AsyncConnection[dict[str, Any]] | None,
                     params: dict[str, str]) -> dict[str, Any] | None:
        """Run the read on ``conn`` (None: a new connection), which goes back to the idle
        list after a success and is closed after any failure."""
        if conn is None:
            conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, row_factory=dict_row,
                connect_timeout=CONNECT_TIMEOUT_S)
        try:
            cur = await conn.execute(self._sql, params)
            row = await cur.fetchone()
        except BaseException:  # also a cancelled read: its connection is mid-statement
            conn.pgconn.finish()
            raise
        self._idle.append(conn)
        return row

    def close(self) -> None:
        """Close the idle connections (synchronous: libpq's close does not wait)."""
        while self._idle:
            self._idle.pop().pgconn.finish()


def _sa_error(sql: str, params: dict[str, str], exc: psycopg.Error) -> sa.exc.DBAPIError:
    err = sa.exc.DBAPIError.instance(sql, params, exc, psycopg.Error)
    assert isinstance(err, sa.exc.DBAPIError)
    return err


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
