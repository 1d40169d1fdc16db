"""The metadata store: researchers, jobs, attempts, metrics, artifacts and events.

SQLAlchemy Core on SQLite (embedded) or PostgreSQL (psycopg 3, production). The
database is the source of truth for job state. Every transition is one conditional
``UPDATE`` whose ``WHERE`` names the state it leaves (and, for a completion, the
attempt it belongs to), so a stale worker or a double delivery changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pitwall.models import BacktestSpec, JobStatus, JobView, Metrics, ProgressEvent

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
    sa.CheckConstraint(
        "status IN ('PENDING','RUNNING','COMPLETED','FAILED','CANCELLED','TIMED_OUT')",
        name="jobs_status_valid",
    ),
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
    sa.Column("outcome", sa.String(16)),
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


class MetadataStore:
    """Job state in a relational database (SQLite or PostgreSQL)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = sa.create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        if create:
            metadata.create_all(self.engine)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()

    # -- jobs ---------------------------------------------------------------------------
    def create_job(
        self, *, spec: BacktestSpec, researcher: str, bundle: bytes, bundle_sha256: str,
        data_version: int | None,
    ) -> str:
        """Insert a PENDING job and its bundle in one transaction; return its id."""
        job_id = str(uuid.uuid4())
        now = utcnow()
        with self._tx() as conn:
            exists = conn.execute(
                sa.select(bundles.c.sha256).where(bundles.c.sha256 == bundle_sha256)
            ).first()
            if exists is None:
                conn.execute(bundles.insert().values(sha256=bundle_sha256, data=bundle,
                                                     created_at=now))
            conn.execute(jobs.insert().values(
                id=job_id, researcher=researcher, status=JobStatus.PENDING.value,
                spec=spec.model_dump_json(), bundle_sha256=bundle_sha256,
                data_version=data_version, created_at=now,
            ))
            self._event(conn, job_id, "status", {"status": JobStatus.PENDING.value})
        return job_id

    def bundle(self, sha256: str) -> bytes:
        with self._tx() as conn:
            row = conn.execute(sa.select(bundles.c.data).where(bundles.c.sha256 == sha256)).first()
        if row is None:
            raise LookupError(f"bundle {sha256} is not stored")
        return bytes(row[0])

    def start_attempt(self, job_id: str, worker: str) -> int | None:
        """PENDING → RUNNING for a new attempt; None if the job is not PENDING any more."""
        now = utcnow()
        with self._tx() as conn:
            res = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.PENDING.value)
                .values(status=JobStatus.RUNNING.value, attempt=jobs.c.attempt + 1,
                        started_at=now, progress=0.0)
                .returning(jobs.c.attempt)
            ).first()
            if res is None:
                return None
            attempt = int(res[0])
            conn.execute(attempts.insert().values(job_id=job_id, attempt=attempt, worker=worker,
                                                  started_at=now))
            self._event(conn, job_id, "status", {"status": "RUNNING", "attempt": attempt})
        return attempt

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
        return True

    def cancel(self, job_id: str, reason: str = "cancelled by the researcher") -> JobStatus:
        """PENDING → CANCELLED now; a RUNNING job is flagged and its worker kills it."""
        with self._tx() as conn:
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
        return self.get(job_id).status

    def cancel_requested(self, job_id: str) -> bool:
        with self._tx() as conn:
            flag = conn.execute(
                sa.select(jobs.c.cancel_requested).where(jobs.c.id == job_id)
            ).scalar_one_or_none()
        return bool(flag)

    def set_progress(self, job_id: str, attempt: int, progress: float, message: str) -> None:
        with self._tx() as conn:
            res = conn.execute(
                jobs.update()
                .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value,
                       jobs.c.attempt == attempt)
                .values(progress=progress)
            )
            if res.rowcount == 1:
                self._event(conn, job_id, "progress", {"progress": progress, "message": message})

    def get(self, job_id: str) -> JobView:
        with self._tx() as conn:
            row = conn.execute(
                sa.select(jobs, metrics_t.c.metrics)
                .select_from(jobs.outerjoin(metrics_t, metrics_t.c.job_id == jobs.c.id))
                .where(jobs.c.id == job_id)
            ).mappings().first()
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
            out.append(ProgressEvent(
                job_id=job_id, seq=r["seq"], kind=r["kind"], at=_aware(r["at"]),
                status=payload.get("status"), progress=payload.get("progress"),
                message=payload.get("message") or payload.get("reason"), data=payload,
            ))
        return out

    def _event(self, conn: Connection, job_id: str, kind: str, payload: dict[str, Any]) -> None:
        # Sequence numbers are per job; the primary key makes a racing writer fail loudly.
        seq = conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(events.c.seq), 0))
            .where(events.c.job_id == job_id)
        ).scalar_one()
        conn.execute(events.insert().values(job_id=job_id, seq=int(seq) + 1, kind=kind,
                                            at=utcnow(), payload=json.dumps(payload)))


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
    )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
