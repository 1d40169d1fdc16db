"""Reads of the metadata store: job views, listings, and what recovery and vacuum look up.

Each function runs on a connection that :class:`~pitwall_executor.jobs.store.MetadataStore`
hands it and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from pitwall.models import BacktestSpec, JobStatus, JobView, Metrics
from pitwall_executor.jobs.errors import JobNotFoundError
from pitwall_executor.jobs.schema import (
    artifacts,
    attempts,
    aware,
    bundles,
    job_metrics,
    jobs,
)


class StaleAttempt(NamedTuple):
    """The open attempt of a RUNNING job whose worker is dead (gone, or silent too long)."""

    job_id: str
    attempt: int
    worker: str


class AttemptOwner(NamedTuple):
    """The process running an attempt: its host, pid and the pid's start time."""

    host: str
    pid: int
    pid_start: int


class OpenAttempt(NamedTuple):
    """The open attempt of a RUNNING job, with its last heartbeat and its process if known."""

    job_id: str
    attempt: int
    worker: str
    heartbeat_at: dt.datetime | None
    owner: AttemptOwner | None


_WITH_METRICS = (sa.select(jobs, job_metrics.c.metrics)
                 .select_from(jobs.outerjoin(job_metrics, job_metrics.c.job_id == jobs.c.id)))
# Built once: the API's status read is the hottest statement of the store.
GET_VIEW = _WITH_METRICS.where(jobs.c.id == sa.bindparam("job_id"))


def job_view(conn: Connection, job_id: str) -> JobView:
    """One job with its metrics."""
    row = conn.execute(GET_VIEW, {"job_id": job_id}).mappings().first()
    if row is None:
        raise JobNotFoundError(f"no job {job_id!r}")
    return view_of(row)


def list_jobs(conn: Connection, *, researcher: str | None, status: JobStatus | None,
              limit: int) -> list[JobView]:
    """Jobs newest first (ties by id)."""
    query = _filtered(researcher, status).order_by(jobs.c.created_at.desc(), jobs.c.id)
    return [view_of(r) for r in conn.execute(query.limit(limit)).mappings()]


def query_jobs(
    conn: Connection, *, researcher: str | None, status: JobStatus | None,
    since: dt.datetime | None, until: dt.datetime | None,
    before: tuple[dt.datetime, str] | None, limit: int,
) -> list[JobView]:
    """Jobs newest first; ``before`` = (created_at, id) of the last row of the previous page."""
    query = (_filtered(researcher, status)
             .order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit))
    if since is not None:
        query = query.where(jobs.c.created_at >= since)
    if until is not None:
        query = query.where(jobs.c.created_at < until)
    if before is not None:
        at, job_id = before
        query = query.where(sa.or_(jobs.c.created_at < at,
                                   sa.and_(jobs.c.created_at == at, jobs.c.id < job_id)))
    return [view_of(r) for r in conn.execute(query).mappings()]


def _filtered(researcher: str | None, status: JobStatus | None) -> sa.Select[Any]:
    query = _WITH_METRICS
    if researcher is not None:
        query = query.where(jobs.c.researcher == researcher)
    if status is not None:
        query = query.where(jobs.c.status == status.value)
    return query


def bundle_data(conn: Connection, sha256: str) -> bytes:
    """The stored bundle with this hash."""
    row = conn.execute(sa.select(bundles.c.data).where(bundles.c.sha256 == sha256)).first()
    if row is None:
        raise LookupError(f"bundle {sha256} is not stored")
    return bytes(row[0])


def count_by_status(conn: Connection) -> dict[str, int]:
    """How many jobs are in each status."""
    rows = conn.execute(sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status))
    return {str(s): int(n) for s, n in rows}


def artifacts_of(conn: Connection, job_id: str) -> dict[str, dict[str, Any]]:
    """The job's artifact rows by name."""
    rows = conn.execute(sa.select(artifacts).where(artifacts.c.job_id == job_id)).mappings()
    return {r["name"]: dict(r) for r in rows}


def cancel_requested(conn: Connection, job_id: str) -> bool:
    """Whether the researcher asked to stop the job."""
    flag = conn.execute(
        sa.select(jobs.c.cancel_requested).where(jobs.c.id == job_id)
    ).scalar_one_or_none()
    return bool(flag)


def attempt_outcomes(conn: Connection, job_id: str) -> list[str | None]:
    """How each attempt of a job ended, oldest first (None while it runs)."""
    rows = conn.execute(sa.select(attempts.c.outcome).where(attempts.c.job_id == job_id)
                        .order_by(attempts.c.attempt))
    return [row[0] for row in rows]


def open_attempts(conn: Connection) -> list[OpenAttempt]:
    """The open attempt of every RUNNING job."""
    rows = conn.execute(
        sa.select(jobs.c.id, jobs.c.attempt, attempts.c.worker, attempts.c.heartbeat_at,
                  attempts.c.host, attempts.c.pid, attempts.c.pid_start)
        .select_from(jobs.join(attempts, sa.and_(attempts.c.job_id == jobs.c.id,
                                                 attempts.c.attempt == jobs.c.attempt)))
        .where(jobs.c.status == JobStatus.RUNNING.value, jobs.c.kind == "run",
               attempts.c.finished_at.is_(None))
    ).all()
    return [OpenAttempt(str(r.id), int(r.attempt), str(r.worker), aware(r.heartbeat_at),
                        AttemptOwner(str(r.host), int(r.pid), int(r.pid_start))
                        if r.pid is not None and r.host is not None
                        and r.pid_start is not None else None)
            for r in rows]


def pending_runs(conn: Connection) -> dict[str, int]:
    """Every PENDING job a worker should run, with its queue priority."""
    rows = conn.execute(sa.select(jobs.c.id, jobs.c.priority).where(
        jobs.c.status == JobStatus.PENDING.value, jobs.c.kind == "run")).all()
    return {job_id: int(priority) for job_id, priority in rows}


def priority_of(conn: Connection, job_id: str) -> int:
    """The queue priority a job was submitted with (0 for an unknown job)."""
    value = conn.execute(sa.select(jobs.c.priority).where(jobs.c.id == job_id)).scalar()
    return int(value or 0)


def data_versions(conn: Connection, dataset: str) -> set[int]:
    """Versions of ``dataset`` that any stored job ran on or will run on."""
    query = sa.select(jobs.c.spec, jobs.c.data_version).where(jobs.c.data_version.is_not(None))
    # The dataset is inside the JSON spec; jobs are few enough to filter here.
    return {int(version) for spec, version in conn.execute(query)
            if json.loads(spec).get("dataset") == dataset}


def view_of(row: Any) -> JobView:
    metrics = row["metrics"]
    return JobView(
        id=row["id"], status=JobStatus(row["status"]),
        spec=BacktestSpec.model_validate_json(row["spec"]), researcher=row["researcher"],
        attempt=row["attempt"], created_at=aware(row["created_at"]),
        started_at=aware(row["started_at"]), finished_at=aware(row["finished_at"]),
        reason=row["reason"], progress=row["progress"],
        metrics=Metrics.model_validate_json(metrics) if metrics else None,
        bundle_sha256=row["bundle_sha256"], data_version=row["data_version"],
        kind="sweep" if row["kind"] == "sweep" else "backtest", parent_id=row["parent_id"],
    )
