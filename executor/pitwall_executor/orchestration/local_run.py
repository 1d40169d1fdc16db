"""``pitwall run`` without a server: this process runs its own job until the job ends.

No PENDING job of this run is left without a worker: each pass enqueues those of its runs
that are PENDING and missing from this process's queue (an infrastructure retry, a run
taken back), and takes back its runs whose worker died (docs/architecture.md §1.5). A
run another live process picked up (a lab that started meanwhile) is waited for. When
this process is interrupted, the job is cancelled rather than left behind.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from pitwall.models import JobStatus, JobView
from pitwall_executor.orchestration import server_client
from pitwall_executor.orchestration.health import GIVE_UP_AFTER_S, Loop
from pitwall_executor.orchestration.ownership import ServerInfo
from pitwall_executor.orchestration.recovery import recover_dead
from pitwall_executor.orchestration.retry import first_line
from pitwall_executor.orchestration.worker import Worker
from pitwall_executor.stack import Stack

log = logging.getLogger(__name__)
REPORT_WAIT_S = 10.0  # the report is written right after the commit; a dead worker's never
REPORT_POLL_S = 0.05
METRICS_POLL_S = 0.1
INTERRUPTED = "cancelled: `pitwall run` was interrupted before the job ended; run it again"


def run_here(stack: Stack, job_id: str, runs: Sequence[str]) -> JobView:
    """Run ``runs`` (the job itself, or a sweep's children) with a worker of this process
    until ``job_id`` has ended; its final view."""
    loop = Loop("pitwall-run", stuck_after_s=float("inf"), give_up_after_s=GIVE_UP_AFTER_S)
    worker = Worker(stack, loop=loop)
    try:
        while True:
            try:
                view = stack.store.get(job_id)
                if view.status.terminal:
                    return view
                _adopt(stack, runs)
                worker.run_one(timeout=0.5)
            except Exception as exc:  # the database or the queue is down: wait it out
                delay = loop.failed(exc)
                if delay is None:
                    raise
                if loop.failures == 1:
                    log.warning("job %s: %s; retrying", job_id, first_line(exc))
                time.sleep(delay)
            else:
                loop.ok()
    except KeyboardInterrupt:
        try:
            _cancel(stack, worker, job_id, runs)
        except Exception as exc:
            log.warning("job %s could not be cancelled (%s); a server on this data dir "
                        "will take it back", job_id, first_line(exc))
        raise


def _cancel(stack: Stack, worker: Worker, job_id: str, runs: Sequence[str]) -> None:
    """End what this process was running CANCELLED, and cancel the rest."""
    for mine in stack.store.open_attempts():
        if mine.job_id in runs and mine.worker == worker.name:
            stack.store.finish(mine.job_id, mine.attempt, JobStatus.CANCELLED,
                               reason=INTERRUPTED)
    stack.store.cancel(job_id, INTERRUPTED)


def wait_for(stack: Stack, server: ServerInfo, job_id: str, runs: Sequence[str]) -> JobView:
    """Wait for ``server`` to end the job; if the server stops first, run it here. A
    completed job's report follows its metrics (docs/architecture.md §2, "record"): it is
    waited for too, at most :data:`REPORT_WAIT_S`, so the caller can name it."""
    try:
        server_client.wait(server, job_id, stack.config.data_dir)
    except server_client.ServerGoneError as exc:
        log.warning("%s; running it in this process", exc)
        return run_here(stack, job_id, runs)
    view = stack.store.get(job_id)
    if view.status is JobStatus.COMPLETED:
        deadline = time.monotonic() + REPORT_WAIT_S
        while (not any(e.kind == "artifacts" for e in stack.store.events(job_id))
               and time.monotonic() < deadline):
            time.sleep(REPORT_POLL_S)
    return view


def _adopt(stack: Stack, runs: Sequence[str]) -> None:
    """Queue this run's PENDING runs the queue lost; take back those whose worker died."""
    pending = stack.store.pending_runs()
    missing = [j for j in runs if j in pending]
    if missing:
        queued = set(stack.queue.queued_ids())
        for job in missing:
            if job not in queued:
                stack.queue.enqueue(job, priority=pending[job])
    cfg = stack.config
    recover_dead(stack.store, stale_after_s=cfg.stale_after_s, max_attempts=cfg.max_attempts,
                 artifacts=stack.artifacts, only=set(runs))


@contextlib.contextmanager
def metrics_first(stack: Stack, job_id: str,
                  on_metrics: Callable[[JobView], None] | None) -> Iterator[None]:
    """While the body waits for ``job_id`` to end, tell ``on_metrics`` once, from another
    thread, the view of the job when its metrics are committed before its end (the
    lookahead audit still running: docs/architecture.md §2, "metrics first"). Nothing
    when the job ends first or ``on_metrics`` is None."""
    if on_metrics is None:
        yield
        return
    done = threading.Event()

    def watch() -> None:
        while not done.wait(METRICS_POLL_S):
            try:
                view = stack.store.get(job_id)
            except Exception:  # the database is down: the waiting side deals with it
                continue
            if view.status.terminal:
                return
            if view.metrics is not None:
                on_metrics(view)
                return

    watcher = threading.Thread(target=watch, name=f"metrics-{job_id[:8]}", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
