"""The metadata store: researchers, jobs, attempts, metrics, artifacts and events.

SQLAlchemy Core on SQLite (embedded) or PostgreSQL (psycopg 3, production). The
database is the source of truth for job state. Every transition is one conditional
``UPDATE`` whose ``WHERE`` names the state it leaves (and, for a completion, the
attempt it belongs to), so a stale worker or a double delivery changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pitwall.models import (
    MAX_EQUITY_POINTS,
    BacktestSpec,
    JobStatus,
    JobView,
    Metrics,
    ProgressEvent,
)

if TYPE_CHECKING:
    from pitwall_executor.jobs.sweeps import SweepRow

metadata = sa.MetaData()
_TS = sa.DateTime(timezone=True)

researchers = sa.Table(
    "researchers", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False, server_default="researcher"),
    sa.Column("token_sha256", sa.String(64), unique=True),
    sa.Column("created_at", _TS, nullable=False),
)

jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("researcher", sa.String(64), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("bundle_sha256", sa.String(64), nullable=False),
    sa.Column("data_version", sa.Integer),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("progress", sa.Float, nullable=False, server_default="0"),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", _TS, nullable=False, index=True),
    sa.Column("started_at", _TS),
    sa.Column("finished_at", _TS),
    # 'run' is executed by a worker; 'sweep' is a parent whose state aggregates its children.
    sa.Column("kind", sa.String(8), nullable=False, server_default="run"),
    sa.Column("parent_id", sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True),
    sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
    # Times the job was taken back from a worker (RUNNING → PENDING): the recovery path.
    sa.Column("recovered", sa.Integer, nullable=False, server_default="0"),
    sa.Column("grid", sa.Text),  # a sweep parent's parameter grid (JSON)
    sa.CheckConstraint(
        "status IN ('PENDING','RUNNING','COMPLETED','FAILED','CANCELLED','TIMED_OUT')",
        name="jobs_status_valid",
    ),
    sa.CheckConstraint("kind IN ('run','sweep')", name="jobs_kind_valid"),
)

bundles = sa.Table(
    "bundles", metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
)

attempts = sa.Table(
    "attempts", metadata,
    sa.Column("job_id", sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("worker", sa.String(128), nullable=False),
    sa.Column("started_at", _TS, nullable=False),
    sa.Column("finished_at", _TS),
    sa.Column("outcome", sa.String(16)),  # a JobStatus, or LOST / HANDED_BACK
    sa.Column("heartbeat_at", _TS),
)

metrics_t = sa.Table(
    "metrics", metadata,
    sa.Column("job_id", sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("metrics", sa.Text, nullable=False),
)

artifacts = sa.Table(
    "artifacts", metadata,
    sa.Column("job_id", sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("uri", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
)

events = sa.Table(
    "events", metadata,
    sa.Column("job_id", sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("at", _TS, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; every time we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


class JobNotFoundError(LookupError):
    """No job has this id."""


class ResearcherAtQuotaError(RuntimeError):
    """The job's researcher already has their quota of sweep runs running."""

    def __init__(self, researcher: str, limit: int) -> None:
        super().__init__(f"researcher {researcher!r} already has {limit} sweep runs running "
                         "(max_running_per_researcher); the run waits for one to end")
        self.researcher = researcher
        self.limit = limit


def _sweep_runs_of(researcher: str) -> sa.ScalarSelect[int]:
    """How many sweep children of ``researcher`` are RUNNING: what the quota counts.

    Counted inside the starting UPDATE, so the check and the start are one statement.
    """
    other = jobs.alias("running")
    return (sa.select(sa.func.count()).select_from(other)
            .where(other.c.researcher == researcher, other.c.kind == "run",
                   other.c.parent_id.is_not(None),
                   other.c.status == JobStatus.RUNNING.value).scalar_subquery())


class MetadataStore:
    """Job state in a relational database (SQLite or PostgreSQL)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = sa.create_engine(url, **kwargs)
        # Single-statement reads (the API's status reads) on connections that stay in
        # autocommit: no BEGIN/COMMIT round trips and no reset when they go back to the pool.
        self._reader: Engine = sa.create_engine(url, isolation_level="AUTOCOMMIT",
                                                pool_reset_on_return=None, **kwargs)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            sa.event.listen(self._reader, "connect", _sqlite_pragmas)
        if create:
            from pitwall_executor.jobs.migrations import upgrade

            upgrade(self.engine)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection for one read-only statement (one statement is one snapshot)."""
        with self._reader.connect() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()
        self._reader.dispose()

    # -- jobs ---------------------------------------------------------------------------
    def create_job(
        self, *, spec: BacktestSpec, researcher: str, bundle: bytes, bundle_sha256: str,
        data_version: int | None, priority: int = 0,
    ) -> str:
        """Insert a PENDING job and its bundle in one transaction; return its id."""
        job_id = str(uuid.uuid4())
        now = utcnow()
        with self._tx() as conn:
            self.put_bundle(conn, bundle_sha256, bundle)
            conn.execute(jobs.insert().values(
                id=job_id, researcher=researcher, status=JobStatus.PENDING.value,
                spec=spec.model_dump_json(), bundle_sha256=bundle_sha256,
                data_version=data_version, created_at=now, priority=priority,
            ))
            self._event(conn, job_id, "status", {"status": JobStatus.PENDING.value})
        return job_id

    def put_bundle(self, conn: Connection, sha256: str, data: bytes) -> None:
        """Store a bundle once (content-addressed), inside the caller's transaction."""
        exists = conn.execute(sa.select(bundles.c.sha256).where(bundles.c.sha256 == sha256)).first()
        if exists is None:
            conn.execute(bundles.insert().values(sha256=sha256, data=data, created_at=utcnow()))

    def bundle(self, sha256: str) -> bytes:
        with self._tx() as conn:
            row = conn.execute(sa.select(bundles.c.data).where(bundles.c.sha256 == sha256)).first()
        if row is None:
            raise LookupError(f"bundle {sha256} is not stored")
        return bytes(row[0])

    def start_attempt(self, job_id: str, worker: str, *, max_running: int | None = None,
                      ) -> int | None:
        """PENDING → RUNNING for a new attempt; None if the job is not PENDING any more.

        ``max_running`` is the per-researcher concurrency quota, and it is a quota on
        *sweep runs* (children of a sweep, the batch lane): a sweep child raises
        :class:`ResearcherAtQuotaError` (and changes nothing) when its researcher already
        has that many sweep children RUNNING, so one researcher's 500-run sweep cannot
        hold every worker slot. Interactive runs (submitted one by one) neither count
        nor wait: they already go first in the queue, and a researcher's own sweep must
        not block their next interactive run. The count and the start are one atomic
        step: an advisory lock per researcher on PostgreSQL, the single writer on SQLite.
        """
        now = utcnow()
        with self._tx() as conn:
            row = conn.execute(sa.select(jobs.c.researcher, jobs.c.parent_id, jobs.c.kind,
                                         jobs.c.status, jobs.c.cancel_requested)
                               .where(jobs.c.id == job_id)).first()
            if row is None or row.kind != "run":
                return None
            if row.status == JobStatus.PENDING.value and row.cancel_requested:
                # Cancelled while a worker ran it, then taken back: end it, do not rerun.
                self._cancel_one(conn, job_id, "cancelled by the researcher")
                self.settle_parent_of(conn, job_id)
                return None
            query = jobs.update().where(jobs.c.id == job_id,
                                        jobs.c.status == JobStatus.PENDING.value)
            quota = max_running if row.parent_id is not None else None
            if quota is not None:
                if conn.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:r))"),
                                 {"r": row.researcher})
                query = query.where(_sweep_runs_of(row.researcher) < quota)
            res = conn.execute(
                query.values(status=JobStatus.RUNNING.value, attempt=jobs.c.attempt + 1,
                             started_at=now, progress=0.0)
                .returning(jobs.c.attempt)
            ).first()
            if res is None:
                status = conn.execute(sa.select(jobs.c.status).where(jobs.c.id == job_id))
                if quota is not None and status.scalar_one() == JobStatus.PENDING.value:
                    raise ResearcherAtQuotaError(row.researcher, quota)
                return None
            attempt = int(res[0])
            conn.execute(attempts.insert().values(job_id=job_id, attempt=attempt, worker=worker,
                                                  started_at=now, heartbeat_at=now))
            self._event(conn, job_id, "status", {"status": "RUNNING", "attempt": attempt})
            if row.parent_id is not None:
                self._parent_started(conn, row.parent_id, now)
        return attempt

    def _parent_started(self, conn: Connection, parent_id: str, now: dt.datetime) -> None:
        res = conn.execute(jobs.update().where(jobs.c.id == parent_id,
                                               jobs.c.status == JobStatus.PENDING.value)
                           .values(status=JobStatus.RUNNING.value, started_at=now))
        if res.rowcount == 1:
            self._event(conn, parent_id, "status", {"status": "RUNNING"})

    def beat(self, job_id: str, attempt: int) -> str:
        """A worker's heartbeat for its attempt: ``"live"``, ``"cancel"`` (the researcher
        asked to stop it) or ``"lost"`` (the attempt was recovered or ended: stop working)."""
        with self._tx() as conn:
            res = conn.execute(attempts.update()
                               .where(attempts.c.job_id == job_id, attempts.c.attempt == attempt,
                                      attempts.c.finished_at.is_(None))
                               .values(heartbeat_at=utcnow()))
            if res.rowcount != 1:
                return "lost"
            flag = conn.execute(sa.select(jobs.c.cancel_requested)
                                .where(jobs.c.id == job_id)).scalar_one()
        return "cancel" if flag else "live"

    def hand_back(self, job_id: str, attempt: int, *, outcome: str = "HANDED_BACK",
                  reason: str = "the worker shut down before the job ended") -> bool:
        """RUNNING → PENDING through the recovery path (``recovered + 1``), fenced by
        attempt; the attempt ends with ``outcome``. False if this attempt is not current."""
        now = utcnow()
        with self._tx() as conn:
            res = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value,
                       jobs.c.attempt == attempt)
                .values(status=JobStatus.PENDING.value, recovered=jobs.c.recovered + 1,
                        progress=0.0))
            if res.rowcount != 1:
                return False
            conn.execute(attempts.update()
                         .where(attempts.c.job_id == job_id, attempts.c.attempt == attempt)
                         .values(finished_at=now, outcome=outcome))
            self._event(conn, job_id, "status", {"status": "PENDING", "reason": reason,
                                                 "attempt": attempt})
        return True

    def finish(
        self, job_id: str, attempt: int, status: JobStatus, *, reason: str | None = None,
        metrics: Metrics | None = None, artifact_rows: Sequence[dict[str, Any]] = (),
    ) -> bool:
        """RUNNING → a terminal state, fenced by attempt; False if this attempt is stale."""
        if not status.terminal:
            raise ValueError(f"{status} is not a terminal state")
        now = utcnow()
        with self._tx() as conn:
            res = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value,
                       jobs.c.attempt == attempt)
                .values(status=status.value, reason=reason, finished_at=now,
                        progress=1.0 if status is JobStatus.COMPLETED else jobs.c.progress)
            )
            if res.rowcount != 1:
                return False
            conn.execute(attempts.update()
                         .where(attempts.c.job_id == job_id, attempts.c.attempt == attempt)
                         .values(finished_at=now, outcome=status.value))
            if metrics is not None:
                conn.execute(metrics_t.insert().values(job_id=job_id, attempt=attempt,
                                                       metrics=metrics.model_dump_json()))
            for row in artifact_rows:
                conn.execute(artifacts.insert().values(job_id=job_id, **row))
            self._event(conn, job_id, "status", {"status": status.value, "reason": reason})
            self.settle_parent_of(conn, job_id)
        return True

    # -- sweeps (pitwall_executor.jobs.sweeps) ------------------------------------------------
    def create_sweep(self, *, spec: BacktestSpec, researcher: str, bundle: bytes,
                     bundle_sha256: str, data_version: int | None,
                     grid: dict[str, list[Any]]) -> tuple[str, list[str]]:
        """A sweep parent and one PENDING child per grid point: (parent id, child ids)."""
        from pitwall_executor.jobs.sweeps import create_sweep

        return create_sweep(self, spec=spec, researcher=researcher, bundle=bundle,
                            bundle_sha256=bundle_sha256, data_version=data_version, grid=grid)

    def sweep_results(self, parent_id: str) -> list[SweepRow]:
        """A sweep's results table: each child's parameters, status and metrics."""
        from pitwall_executor.jobs.sweeps import sweep_results

        return sweep_results(self, parent_id)

    def settle_parent_of(self, conn: Connection, job_id: str) -> None:
        """Update the sweep a job belongs to (if any) after the job changed state."""
        parent = conn.execute(sa.select(jobs.c.parent_id).where(jobs.c.id == job_id)).scalar()
        if parent is not None:
            from pitwall_executor.jobs.sweeps import settle_parent

            settle_parent(self, conn, parent)

    def cancel(self, job_id: str, reason: str = "cancelled by the researcher") -> JobStatus:
        """PENDING → CANCELLED now; a RUNNING job is flagged and its worker kills it.

        Cancelling a sweep cancels its children; the sweep ends when they all have.
        """
        with self._tx() as conn:
            kind = conn.execute(sa.select(jobs.c.kind).where(jobs.c.id == job_id)).scalar()
            if kind == "sweep":
                children = conn.execute(sa.select(jobs.c.id).where(jobs.c.parent_id == job_id))
                for (child,) in children.all():
                    self._cancel_one(conn, child, reason)
                from pitwall_executor.jobs.sweeps import settle_parent

                settle_parent(self, conn, job_id)
            elif kind is not None:
                self._cancel_one(conn, job_id, reason)
                self.settle_parent_of(conn, job_id)
        return self.get(job_id).status

    def _cancel_one(self, conn: Connection, job_id: str, reason: str) -> None:
        res = conn.execute(
            jobs.update()
            .where(jobs.c.id == job_id, jobs.c.status == JobStatus.PENDING.value)
            .values(status=JobStatus.CANCELLED.value, reason=reason, finished_at=utcnow())
        )
        if res.rowcount == 1:
            self._event(conn, job_id, "status", {"status": "CANCELLED", "reason": reason})
        else:
            conn.execute(jobs.update()
                         .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value)
                         .values(cancel_requested=True))

    def cancel_requested(self, job_id: str) -> bool:
        with self._tx() as conn:
            flag = conn.execute(
                sa.select(jobs.c.cancel_requested).where(jobs.c.id == job_id)
            ).scalar_one_or_none()
        return bool(flag)

    def set_progress(self, job_id: str, attempt: int, progress: float, message: str,
                     equity: Sequence[tuple[int, float]] = ()) -> None:
        """Record the running attempt's progress; ``equity`` are the new ``(ts_ms, value)``
        points of its running equity curve (non-finite ones dropped, thinned to at most
        :data:`~pitwall.models.MAX_EQUITY_POINTS`), carried by the progress event."""
        payload: dict[str, Any] = {"progress": progress, "message": message}
        points = equity_points(equity)
        if points:
            payload["equity"] = points
        with self._tx() as conn:
            res = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value,
                       jobs.c.attempt == attempt)
                .values(progress=progress)
            )
            if res.rowcount == 1:
                self._event(conn, job_id, "progress", payload)

    def get(self, job_id: str) -> JobView:
        """One job with its metrics: one statement, built once, run in autocommit."""
        with self._read() as conn:
            row = conn.execute(_GET_VIEW, {"job_id": job_id}).mappings().first()
        if row is None:
            raise JobNotFoundError(f"no job {job_id!r}")
        return _view(row)

    def list_jobs(
        self, *, researcher: str | None = None, status: JobStatus | None = None, limit: int = 50,
    ) -> list[JobView]:
        query = (sa.select(jobs, metrics_t.c.metrics)
                 .select_from(jobs.outerjoin(metrics_t, metrics_t.c.job_id == jobs.c.id))
                 .order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit))
        if researcher is not None:
            query = query.where(jobs.c.researcher == researcher)
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        with self._tx() as conn:
            return [_view(r) for r in conn.execute(query).mappings()]

    # -- read helpers of the API (keyset pagination, metrics, health) --------------------
    def query_jobs(
        self, *, researcher: str | None = None, status: JobStatus | None = None,
        since: dt.datetime | None = None, until: dt.datetime | None = None,
        before: tuple[dt.datetime, str] | None = None, limit: int = 50,
    ) -> list[JobView]:
        """Jobs newest first; ``before`` = (created_at, id) of the last row of the previous page."""
        query = (sa.select(jobs, metrics_t.c.metrics)
                 .select_from(jobs.outerjoin(metrics_t, metrics_t.c.job_id == jobs.c.id))
                 .order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit))
        if researcher is not None:
            query = query.where(jobs.c.researcher == researcher)
        if status is not None:
            query = query.where(jobs.c.status == status.value)
        if since is not None:
            query = query.where(jobs.c.created_at >= since)
        if until is not None:
            query = query.where(jobs.c.created_at < until)
        if before is not None:
            at, job_id = before
            query = query.where(sa.or_(jobs.c.created_at < at,
                                       sa.and_(jobs.c.created_at == at, jobs.c.id < job_id)))
        with self._tx() as conn:
            return [_view(r) for r in conn.execute(query).mappings()]

    def count_by_status(self) -> dict[str, int]:
        """How many jobs are in each status (for the /metrics gauge)."""
        with self._tx() as conn:
            rows = conn.execute(sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status))
            return {str(s): int(n) for s, n in rows}

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def artifacts(self, job_id: str) -> dict[str, dict[str, Any]]:
        with self._tx() as conn:
            rows = conn.execute(sa.select(artifacts).where(artifacts.c.job_id == job_id)).mappings()
            return {r["name"]: dict(r) for r in rows}

    def events(self, job_id: str, after: int = 0) -> list[ProgressEvent]:
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(events).where(events.c.job_id == job_id, events.c.seq > after)
                .order_by(events.c.seq)
            ).mappings().all()
        out = []
        for r in rows:
            payload = json.loads(r["payload"])
            equity = payload.pop("equity", None)  # its own field, not repeated in ``data``
            out.append(ProgressEvent(
                job_id=job_id, seq=r["seq"], kind=r["kind"], at=_aware(r["at"]),
                status=payload.get("status"), progress=payload.get("progress"),
                message=payload.get("message") or payload.get("reason"), data=payload,
                equity=equity,
            ))
        return out

    def _event(self, conn: Connection, job_id: str, kind: str, payload: dict[str, Any]) -> None:
        self.event(conn, job_id, kind, payload)

    def event(self, conn: Connection, job_id: str, kind: str, payload: dict[str, Any]) -> None:
        """Append an event to a job's stream inside the caller's transaction."""
        # Sequence numbers are per job; the primary key makes a racing writer fail loudly.
        seq = conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(events.c.seq), 0))
            .where(events.c.job_id == job_id)
        ).scalar_one()
        conn.execute(events.insert().values(job_id=job_id, seq=int(seq) + 1, kind=kind,
                                            at=utcnow(), payload=json.dumps(payload)))


def equity_points(points: Sequence[tuple[int, float]]) -> list[list[int | float]]:
    """``[[ts_ms, value], ...]``: finite points only, thinned evenly (the last one kept) to
    at most :data:`~pitwall.models.MAX_EQUITY_POINTS`."""
    clean: list[list[int | float]] = [[int(ts), float(v)] for ts, v in points
                                      if math.isfinite(v)]
    if len(clean) > MAX_EQUITY_POINTS:
        step = len(clean) / MAX_EQUITY_POINTS
        clean = [clean[min(len(clean) - 1, math.ceil((i + 1) * step) - 1)]
                 for i in range(MAX_EQUITY_POINTS)]
    return clean


_GET_VIEW = (sa.select(jobs, metrics_t.c.metrics)
             .select_from(jobs.outerjoin(metrics_t, metrics_t.c.job_id == jobs.c.id))
             .where(jobs.c.id == sa.bindparam("job_id")))


def _view(row: Any) -> JobView:
    metrics = row["metrics"]
    return JobView(
        id=row["id"], status=JobStatus(row["status"]),
        spec=BacktestSpec.model_validate_json(row["spec"]), researcher=row["researcher"],
        attempt=row["attempt"], created_at=_aware(row["created_at"]),
        started_at=_aware(row["started_at"]), finished_at=_aware(row["finished_at"]),
        reason=row["reason"], progress=row["progress"],
        metrics=Metrics.model_validate_json(metrics) if metrics else None,
        bundle_sha256=row["bundle_sha256"], data_version=row["data_version"],
        kind="sweep" if row["kind"] == "sweep" else "backtest", parent_id=row["parent_id"],
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
