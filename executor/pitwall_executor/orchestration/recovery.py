"""Recovery: take jobs back from dead workers, and make the queue match the database.

The database is the source of truth; the queue only says *when* to look at a job. Each
pass of :class:`RecoveryLoop` does, in this order:

1. :func:`recover_dead` — a RUNNING job whose worker is dead goes back to PENDING through
   the recovery path (``recovered + 1``) and is enqueued at once, or to FAILED with the
   reason once ``max_attempts`` workers died running it (a poison job); the attempt ends
   ``LOST``.
   Dead means: on this host, its process (pid and start time, recorded with the
   attempt) is gone — known at once; elsewhere, its heartbeat is ``stale_after_s`` old.
   A live but silent worker (stopped, hung) is fenced: its completion names an old
   attempt. What the lost attempt left in the artifact store is removed.
2. ``queue.requeue_stale`` — queue entries whose consumer stopped heartbeating are handed
   out again (``XAUTOCLAIM``), so the pending list of a dead consumer does not grow.
3. :func:`reconcile` — every PENDING job with no entry in the queue is enqueued again:
   after Redis lost its data (the queue wakes the loop when it notices), or a crash
   between a commit and an enqueue. A duplicate entry is harmless: a delivery whose job
   is not PENDING is just acked.
4. ``reap`` — what dead workers of this host left (sandboxes, their files), if given.

After the database was unreachable, every heartbeat is old: the loop judges heartbeats
again only once the database has answered for ``stale_after_s`` (live workers have
beaten by then). Before its workers start, a process runs :func:`recover_at_startup`:
the same rule, then every PENDING job is enqueued (an in-process queue died with its
predecessor). Heartbeat times are written with each worker's clock: keep hosts on NTP.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from pitwall.models import JobStatus
from pitwall_executor.jobs.queue import JobQueue
from pitwall_executor.jobs.store import (
    MetadataStore,
    OpenAttempt,
    StaleAttempt,
    database_unreachable,
)
from pitwall_executor.orchestration.health import Loop, run_guarded
from pitwall_executor.sandbox import owner
from pitwall_executor.storage.artifacts import ArtifactStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovered:
    """One job taken back from a dead worker, and where it went."""

    job_id: str
    attempt: int
    status: JobStatus


def process_gone(attempt: OpenAttempt) -> bool:
    """Whether the attempt's worker process is known dead: it ran on this host and its pid
    is gone or now names another process."""
    who = attempt.owner
    if who is None or who.host != owner.host():
        return False
    return not owner.Owner(who.pid, who.pid_start).alive()


def recover_dead(store: MetadataStore, *, stale_after_s: float | None, max_attempts: int,
                 artifacts: ArtifactStore | None = None,
                 only: Collection[str] | None = None) -> list[Recovered]:
    """Take back every RUNNING job (of ``only``, if given) whose worker is dead (see the
    module's rule) and discard what each lost attempt left in ``artifacts``.
    ``stale_after_s`` None: judge by processes only (heartbeats cannot be trusted yet)."""
    now = dt.datetime.now(dt.UTC)
    cutoff = now - dt.timedelta(seconds=stale_after_s) if stale_after_s is not None else None
    out = []
    for open_attempt in store.open_attempts():
        if only is not None and open_attempt.job_id not in only:
            continue
        if process_gone(open_attempt):
            # Its heartbeat cannot move any more: any time after now fences it.
            silent_since, why = now + dt.timedelta(seconds=1), "its process is gone"
        elif cutoff is not None:
            silent_since, why = cutoff, "it stopped heartbeating"
        else:
            continue
        beat = open_attempt.heartbeat_at
        if beat is not None and beat >= silent_since:
            continue
        stale = StaleAttempt(open_attempt.job_id, open_attempt.attempt, open_attempt.worker)
        status = store.recover_lost(stale, silent_since=silent_since, max_attempts=max_attempts)
        if status is None:
            continue
        log.warning("job %s attempt %d: worker %s is dead (%s); the job is now %s",
                    stale.job_id, stale.attempt, stale.worker, why, status.value)
        out.append(Recovered(stale.job_id, stale.attempt, status))
        if artifacts is not None:
            artifacts.discard(stale.job_id, stale.attempt)
    return out


def recover_stale(store: MetadataStore, *, older_than: float, max_attempts: int,
                  artifacts: ArtifactStore | None = None) -> list[Recovered]:
    """:func:`recover_dead` with heartbeats older than ``older_than`` s taken for death."""
    return recover_dead(store, stale_after_s=older_than, max_attempts=max_attempts,
                        artifacts=artifacts)


def requeue(store: MetadataStore, queue: JobQueue, recovered: list[Recovered]) -> None:
    """Enqueue the jobs taken back to PENDING now: the dead worker's queue entry would only
    be handed out again once idle for ``stale_after_s`` (a duplicate is acked away)."""
    for rec in recovered:
        if rec.status is JobStatus.PENDING:
            queue.enqueue(rec.job_id, priority=store.priority_of(rec.job_id))


def reconcile(store: MetadataStore, queue: JobQueue) -> list[str]:
    """Enqueue every PENDING job the queue does not hold; return their ids."""
    # Read the queue first: a job enqueued after this snapshot was PENDING before it
    # too, so at worst it is enqueued twice, never missed.
    queued = set(queue.queued_ids())
    missing = {j: p for j, p in store.pending_runs().items() if j not in queued}
    for job_id, priority in missing.items():
        queue.enqueue(job_id, priority=priority)
    if missing:
        log.warning("re-enqueued %d PENDING jobs the queue did not hold", len(missing))
    return list(missing)


def recover_at_startup(store: MetadataStore, queue: JobQueue, *, max_attempts: int,
                       stale_after_s: float,
                       artifacts: ArtifactStore | None = None) -> list[Recovered]:
    """Before a process's workers start: take back what dead workers left RUNNING — at
    once for a dead process of this host (a killed predecessor), after ``stale_after_s``
    of silence elsewhere; a live worker's job (``pitwall run`` in a terminal beside a
    lab on the same data dir) is left to it. Then every PENDING job is enqueued."""
    recovered = recover_dead(store, stale_after_s=stale_after_s, max_attempts=max_attempts,
                             artifacts=artifacts)
    requeue(store, queue, recovered)
    reconcile(store, queue)
    return recovered


class RecoveryLoop:
    """Runs recovery every ``interval_s`` (or at once when woken) until ``stop`` is set.

    Every worker process may run one: each step is fenced in the database, so racing
    loops can only produce duplicate queue entries, which workers ack away.
    """

    def __init__(self, store: MetadataStore, queue: JobQueue, *, stale_after_s: float,
                 max_attempts: int, interval_s: float | None = None,
                 artifacts: ArtifactStore | None = None,
                 reap: Callable[[], object] | None = None, loop: Loop | None = None) -> None:
        self.store, self.queue, self.artifacts = store, queue, artifacts
        self.stale_after_s = stale_after_s
        self.max_attempts = max_attempts
        self.interval_s = interval_s if interval_s is not None else min(5.0, stale_after_s / 3)
        self.reap = reap
        self.loop = loop or Loop("recovery", stuck_after_s=float("inf"),
                                 give_up_after_s=float("inf"))
        self._wake = threading.Event()
        self._db_back_at: float | None = -float("inf")  # None while the DB is unreachable

    def wake(self) -> None:
        """Run a pass now (the queue lost its data: reconcile without waiting)."""
        self._wake.set()

    def tick(self) -> None:
        """One pass: recover dead attempts, requeue stale claims, reconcile, reap."""
        try:
            self._pass()
        except Exception as exc:
            if database_unreachable(exc):
                self._db_back_at = None
            raise

    def _pass(self) -> None:
        now = time.monotonic()
        if self._db_back_at is None:
            self._db_back_at = now
        trusted = now - self._db_back_at >= self.stale_after_s
        recovered = recover_dead(self.store, max_attempts=self.max_attempts,
                                 stale_after_s=self.stale_after_s if trusted else None,
                                 artifacts=self.artifacts)
        requeue(self.store, self.queue, recovered)
        self.queue.requeue_stale(older_than=self.stale_after_s)
        reconcile(self.store, self.queue)
        if self.reap is not None:
            self.reap()

    def run(self, stop: threading.Event) -> None:
        """Pass after pass until ``stop``; a failing pass (Redis or the DB down) is logged
        and retried with a bounded backoff."""
        run_guarded(self.loop, self.tick, stop, wake=self._wake, every_s=self.interval_s)
