"""Recovery: take jobs back from dead workers, and make the queue match the database.

The database is the source of truth; the queue only says *when* to look at a job. Each
tick of :class:`RecoveryLoop` does, in this order:

1. :func:`recover_stale` — a RUNNING job whose attempt has not heartbeaten in the
   database for ``stale_after_s`` lost its worker. The attempt ends ``LOST`` and the job
   goes back to PENDING through the recovery path (``recovered + 1``), or to FAILED with
   the reason once ``max_attempts`` workers died running it (a poison job). The stale
   worker, if it was only slow, is fenced: its completion names an old attempt. What
   the lost attempt left in the artifact store (files of a shared folder, objects it
   uploaded to S3 before it died) is never referenced, and is removed.
2. ``queue.requeue_stale`` — queue entries whose consumer stopped heartbeating are handed
   out again (``XAUTOCLAIM``), so the pending list of a dead consumer does not grow.
3. :func:`reconcile` — every PENDING job with no entry in the queue is enqueued again:
   after a Redis restart that lost its data, or a crash between a commit and an enqueue.
   A duplicate entry is harmless: a delivery whose job is not PENDING is just acked.

Before its workers start, ``pitwall serve`` runs :func:`recover_at_startup`: on the
in-process queue it owns every job of its database, so what a killed predecessor left
RUNNING is taken back at once rather than after ``stale_after_s``.

Heartbeat times are written with each worker's clock: keep the hosts on NTP.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass

from pitwall.models import JobStatus
from pitwall_executor.jobs.queue import JobQueue
from pitwall_executor.jobs.store import MetadataStore
from pitwall_executor.storage.artifacts import ArtifactStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recovered:
    """One job taken back from a dead worker, and where it went."""

    job_id: str
    attempt: int
    status: JobStatus


def recover_stale(store: MetadataStore, *, older_than: float, max_attempts: int,
                  artifacts: ArtifactStore | None = None) -> list[Recovered]:
    """Take back every RUNNING job whose attempt stopped heartbeating ``older_than`` s ago,
    and discard what each lost attempt left in ``artifacts``."""
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than)
    out = []
    for stale in store.stale_attempts(cutoff):
        status = store.recover_lost(stale, silent_since=cutoff, max_attempts=max_attempts)
        if status is not None:
            log.warning("job %s attempt %d: worker %s stopped heartbeating; job is now %s",
                        stale.job_id, stale.attempt, stale.worker, status.value)
            out.append(Recovered(stale.job_id, stale.attempt, status))
            if artifacts is not None:
                artifacts.discard(stale.job_id, stale.attempt)
    return out


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
                       exclusive: bool, stale_after_s: float,
                       artifacts: ArtifactStore | None = None) -> list[Recovered]:
    """Before a process's workers start: take back what a killed predecessor left behind.

    ``exclusive`` says no other process runs jobs of this database (``pitwall serve``
    on the in-process queue: a claim cannot outlive the process that made it). Then
    every RUNNING attempt is an orphan of a dead process and is taken back at once —
    re-enqueued, or FAILED once ``max_attempts`` workers died running it — instead of
    after ``stale_after_s`` of silence. Either way, every PENDING job is enqueued again
    (the in-process queue of the killed process died with it).
    """
    recovered = recover_stale(store, older_than=0.0 if exclusive else stale_after_s,
                              max_attempts=max_attempts, artifacts=artifacts)
    reconcile(store, queue)
    return recovered


class RecoveryLoop:
    """Runs recovery every ``interval_s`` in a thread until ``stop`` is set.

    Every worker process may run one: each step is fenced in the database, so racing
    loops can only produce duplicate queue entries, which workers ack away.
    """

    def __init__(self, store: MetadataStore, queue: JobQueue, *, stale_after_s: float,
                 max_attempts: int, interval_s: float | None = None,
                 artifacts: ArtifactStore | None = None) -> None:
        self.store, self.queue, self.artifacts = store, queue, artifacts
        self.stale_after_s = stale_after_s
        self.max_attempts = max_attempts
        self.interval_s = interval_s if interval_s is not None else min(5.0, stale_after_s / 3)

    def tick(self) -> None:
        """One pass: recover dead attempts, requeue stale claims, reconcile the queue."""
        recover_stale(self.store, older_than=self.stale_after_s, max_attempts=self.max_attempts,
                      artifacts=self.artifacts)
        self.queue.requeue_stale(older_than=self.stale_after_s)
        reconcile(self.store, self.queue)

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop``; a failing tick (Redis or the DB down) is logged and retried."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:  # an outage must not kill recovery; the next tick retries
                log.exception("recovery tick failed; retrying in %.1f s", self.interval_s)
            stop.wait(self.interval_s)
