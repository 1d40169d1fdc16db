"""The job state machine: every change of a job's state, inside the caller's transaction.

Every transition is one conditional ``UPDATE`` whose ``WHERE`` names the state it leaves
(and, for a completion, the attempt it belongs to), so a stale worker or a double
delivery changes nothing; the database's triggers refuse any other change (see the
initial migration). Each change appends its event and settles the sweep the job belongs
to in the same transaction. :class:`~pitwall_executor.jobs.store.MetadataStore` opens
the transactions and calls these functions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from pitwall.models import BacktestSpec, JobStatus, Metrics
from pitwall_executor.jobs import events, sweeps
from pitwall_executor.jobs.errors import ResearcherAtQuotaError
from pitwall_executor.jobs.queries import AttemptOwner, StaleAttempt
from pitwall_executor.jobs.schema import (
    LOST,
    artifacts,
    attempts,
    bundles,
    job_metrics,
    jobs,
    utcnow,
)


def _sweep_runs_of(researcher: str) -> sa.ScalarSelect[int]:
    """How many sweep children of ``researcher`` are RUNNING: what the quota counts.

    Counted inside the starting UPDATE, so the check and the start are one statement.
    """
    other = jobs.alias("running")
    return (sa.select(sa.func.count()).select_from(other)
            .where(other.c.researcher == researcher, other.c.kind == "run",
                   other.c.parent_id.is_not(None),
                   other.c.status == JobStatus.RUNNING.value).scalar_subquery())


def create(conn: Connection, job_id: str, *, spec: BacktestSpec, researcher: str,
           bundle_sha256: str, data_version: int | None, priority: int) -> None:
    """A job is born PENDING (its bundle stored by :func:`put_bundle` first)."""
    conn.execute(jobs.insert().values(
        id=job_id, researcher=researcher, status=JobStatus.PENDING.value,
        spec=spec.model_dump_json(), bundle_sha256=bundle_sha256,
        data_version=data_version, created_at=utcnow(), priority=priority,
    ))
    events.append(conn, job_id, "status", {"status": JobStatus.PENDING.value})


def put_bundle(conn: Connection, sha256: str, data: bytes) -> None:
    """Store a bundle once (content-addressed). Two first submissions of one bundle at
    once both succeed: the insert does nothing where the other's row is already there
    (a check, then an insert, let the second fail on the unique key)."""
    insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(
        bundles).values(sha256=sha256, data=data, created_at=utcnow())
    conn.execute(insert.on_conflict_do_nothing(index_elements=[bundles.c.sha256]))


def start(conn: Connection, job_id: str, worker: str, max_running: int | None,
          owner: AttemptOwner | None = None) -> int | None:
    """PENDING → RUNNING for a new attempt (see ``MetadataStore.start_attempt``)."""
    now = utcnow()
    row = conn.execute(sa.select(jobs.c.researcher, jobs.c.parent_id, jobs.c.kind,
                                 jobs.c.status, jobs.c.cancel_requested)
                       .where(jobs.c.id == job_id)).first()
    if row is None or row.kind != "run":
        return None
    if row.status == JobStatus.PENDING.value and row.cancel_requested:
        # Cancelled while a worker ran it, then taken back: end it, do not rerun.
        cancel_one(conn, job_id, "cancelled by the researcher")
        sweeps.settle_parent_of(conn, job_id)
        return None
    query = jobs.update().where(jobs.c.id == job_id, jobs.c.status == JobStatus.PENDING.value)
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
    process = owner._asdict() if owner is not None else {}
    conn.execute(attempts.insert().values(job_id=job_id, attempt=attempt, worker=worker,
                                          started_at=now, heartbeat_at=now, **process))
    events.append(conn, job_id, "status", {"status": "RUNNING", "attempt": attempt})
    if row.parent_id is not None:
        sweeps.parent_started(conn, row.parent_id, now)
    return attempt


def beat(conn: Connection, job_id: str, attempt: int) -> str:
    """Record a heartbeat: ``"live"``, ``"cancel"`` or ``"lost"``."""
    res = conn.execute(attempts.update()
                       .where(attempts.c.job_id == job_id, attempts.c.attempt == attempt,
                              attempts.c.finished_at.is_(None))
                       .values(heartbeat_at=utcnow()))
    if res.rowcount != 1:
        return "lost"
    flag = conn.execute(sa.select(jobs.c.cancel_requested)
                        .where(jobs.c.id == job_id)).scalar_one()
    return "cancel" if flag else "live"


def hand_back(conn: Connection, job_id: str, attempt: int, outcome: str, reason: str) -> bool:
    """RUNNING → PENDING by the recovery path, the attempt ending ``outcome``."""
    if not _requeue(conn, job_id, attempt):
        return False
    conn.execute(attempts.update()
                 .where(attempts.c.job_id == job_id, attempts.c.attempt == attempt)
                 .values(finished_at=utcnow(), outcome=outcome))
    events.append(conn, job_id, "status", {"status": "PENDING", "reason": reason,
                                           "attempt": attempt})
    return True


def _requeue(conn: Connection, job_id: str, attempt: int) -> bool:
    """RUNNING → PENDING, marked as the recovery path (``recovered + 1``), fenced by attempt."""
    res = conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value,
               jobs.c.attempt == attempt)
        .values(status=JobStatus.PENDING.value, recovered=jobs.c.recovered + 1, progress=0.0))
    if res.rowcount != 1:
        return False
    _put_metrics(conn, job_id, attempt, None)  # shown early by the attempt taken back
    return True


def finish(conn: Connection, job_id: str, attempt: int, status: JobStatus, *,
           reason: str | None, metrics: Metrics | None,
           artifact_rows: Sequence[dict[str, Any]]) -> bool:
    """RUNNING → a terminal state, fenced by attempt; False if this attempt is stale."""
    now = utcnow()
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
    _put_metrics(conn, job_id, attempt, metrics)  # the final figures, or none
    for row in artifact_rows:
        conn.execute(artifacts.insert().values(job_id=job_id, **row))
    events.append(conn, job_id, "status", {"status": status.value, "reason": reason})
    sweeps.settle_parent_of(conn, job_id)
    return True


def recover_lost(conn: Connection, stale: StaleAttempt, silent_since: dt.datetime,
                 max_attempts: int) -> JobStatus | None:
    """End a silent attempt ``LOST``; the job goes back to PENDING, or FAILED once
    ``max_attempts`` of its attempts were lost. None if it ended or beat since."""
    job_id, attempt, worker = stale
    now = utcnow()
    # Fenced twice: the attempt must still be open and still silent.
    res = conn.execute(attempts.update()
                       .where(attempts.c.job_id == job_id, attempts.c.attempt == attempt,
                              attempts.c.finished_at.is_(None),
                              attempts.c.heartbeat_at < silent_since)
                       .values(finished_at=now, outcome=LOST))
    if res.rowcount != 1:
        return None
    lost = conn.execute(sa.select(sa.func.count()).select_from(attempts).where(
        attempts.c.job_id == job_id, attempts.c.outcome == LOST)).scalar_one()
    if lost < max_attempts:
        _requeue(conn, job_id, attempt)
        events.append(conn, job_id, "status", {
            "status": "PENDING", "attempt": attempt,
            "reason": f"worker {worker} stopped heartbeating; the job will run again"})
        return JobStatus.PENDING
    reason = (f"worker died {lost} times running this job (last: {worker}, attempt "
              f"{attempt}); the strategy may be crashing or exhausting the worker — "
              "check its log and limits.memory_mb before resubmitting")
    conn.execute(jobs.update().where(jobs.c.id == job_id, jobs.c.attempt == attempt,
                                     jobs.c.status == JobStatus.RUNNING.value)
                 .values(status=JobStatus.FAILED.value, reason=reason, finished_at=now))
    _put_metrics(conn, job_id, attempt, None)
    events.append(conn, job_id, "status", {"status": "FAILED", "reason": reason})
    sweeps.settle_parent_of(conn, job_id)
    return JobStatus.FAILED


def cancel(conn: Connection, job_id: str, reason: str) -> None:
    """Cancel a job, or every child of a sweep, and settle the sweep."""
    kind = conn.execute(sa.select(jobs.c.kind).where(jobs.c.id == job_id)).scalar()
    if kind == "sweep":
        children = conn.execute(sa.select(jobs.c.id).where(jobs.c.parent_id == job_id))
        for (child,) in children.all():
            cancel_one(conn, child, reason)
        sweeps.settle_parent(conn, job_id)
    elif kind is not None:
        cancel_one(conn, job_id, reason)
        sweeps.settle_parent_of(conn, job_id)


def cancel_one(conn: Connection, job_id: str, reason: str) -> None:
    """PENDING → CANCELLED now; a RUNNING job is flagged for its worker to kill."""
    res = conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.status == JobStatus.PENDING.value)
        .values(status=JobStatus.CANCELLED.value, reason=reason, finished_at=utcnow())
    )
    if res.rowcount == 1:
        events.append(conn, job_id, "status", {"status": "CANCELLED", "reason": reason})
    else:
        conn.execute(jobs.update()
                     .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value)
                     .values(cancel_requested=True))


def set_progress(conn: Connection, job_id: str, attempt: int, progress: float,
                 payload: dict[str, Any], metrics: Metrics | None = None) -> None:
    """Record the running attempt's progress and its event; stale attempts change nothing.

    ``metrics``: the trusted engine's figures, shown before the attempt ends (their
    lookahead verdict still ``pending``, docs/architecture.md §2 "metrics first"); the
    terminal commit replaces them, and a job taken back loses them."""
    res = conn.execute(
        jobs.update()
        .where(jobs.c.id == job_id, jobs.c.status == JobStatus.RUNNING.value,
               jobs.c.attempt == attempt)
        .values(progress=progress)
    )
    if res.rowcount == 1:
        if metrics is not None:
            _put_metrics(conn, job_id, attempt, metrics)
        events.append(conn, job_id, "progress", payload)


def _put_metrics(conn: Connection, job_id: str, attempt: int, metrics: Metrics | None) -> None:
    """The job's one metrics row becomes ``metrics`` (None: no row)."""
    conn.execute(job_metrics.delete().where(job_metrics.c.job_id == job_id))
    if metrics is not None:
        conn.execute(job_metrics.insert().values(job_id=job_id, attempt=attempt,
                                                 metrics=metrics.model_dump_json()))

