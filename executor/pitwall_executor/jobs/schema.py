"""The tables of the metadata database: the one place that names tables and columns.

The Alembic migrations (``jobs/migrations``) build exactly this schema, and a test
compares the two. Only modules of ``pitwall_executor.jobs`` read or write these tables;
everything else goes through :class:`~pitwall_executor.jobs.store.MetadataStore`.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

metadata = sa.MetaData()
_TS = sa.DateTime(timezone=True)

# attempts.outcome: a terminal JobStatus, or why the job went back to PENDING.
LOST = "LOST"  # the worker stopped heartbeating, or its process is gone
HANDED_BACK = "HANDED_BACK"  # the worker shut down and gave the job back
INFRA_FAILED = "INFRA_FAILED"  # the platform, not the strategy, ended the attempt

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
    sa.Column("outcome", sa.String(16)),  # how it ended: a JobStatus, LOST, HANDED_BACK…
    sa.Column("heartbeat_at", _TS),
    # The worker's process: its host, pid and the pid's start time (clock ticks since boot).
    # Recovery on the same host tells a dead worker from a live one at once by these,
    # instead of waiting for its heartbeat to go stale (a recycled pid has another start).
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("pid_start", sa.BigInteger),
)

job_metrics = sa.Table(
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
    """The time every timestamp column stores: aware, UTC."""
    return dt.datetime.now(dt.UTC)


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """A timestamp read back from the database, made aware again."""
    # SQLite hands back naive datetimes; every time we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value
