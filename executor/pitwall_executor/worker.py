"""Workers: claim a job, run an attempt, record the outcome, acknowledge.

A heartbeat thread keeps the claim alive while the sandbox runs and watches for a
cancel request, which it turns into a kill of the job's sandbox.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback

from pitwall.models import JobStatus
from pitwall_executor.execution import AttemptResult, run_attempt
from pitwall_executor.queue import Claim
from pitwall_executor.stack import Stack

log = logging.getLogger(__name__)
HEARTBEAT_S = 1.0


class Worker:
    """One worker slot: runs one job at a time."""

    def __init__(self, stack: Stack, name: str | None = None) -> None:
        self.stack = stack
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"

    def run_one(self, timeout: float = 1.0) -> str | None:
        """Claim and run one job; return its id, or None when the queue stayed empty."""
        claim = self.stack.queue.claim(self.name, timeout=timeout)
        if claim is None:
            return None
        try:
            self._run_claim(claim)
        finally:
            self.stack.queue.ack(claim)
        return claim.job_id

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.run_one(timeout=0.5)

    def _run_claim(self, claim: Claim) -> None:
        store = self.stack.store
        attempt = store.start_attempt(claim.job_id, self.name)
        if attempt is None:
            return  # cancelled or already handled: the DB decides, not the queue
        done = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(claim, done), daemon=True)
        beat.start()
        try:
            result = run_attempt(self.stack, claim.job_id, attempt,
                                 lambda p, m: store.set_progress(claim.job_id, attempt, p, m))
        except Exception as exc:  # a bug on the trusted side must still end the job
            log.exception("job %s attempt %d crashed the worker path", claim.job_id, attempt)
            trace = traceback.format_exception_only(exc)[-1].strip()
            result = AttemptResult(JobStatus.FAILED, f"internal error: {trace}; report this bug")
        finally:
            done.set()
            beat.join()
        rows = [self.stack.artifacts.describe(p) for p in result.files if p.exists()]
        won = store.finish(claim.job_id, attempt, result.status, reason=result.reason,
                           metrics=result.metrics, artifact_rows=rows)
        if not won:
            self.stack.artifacts.discard(claim.job_id, attempt)

    def _heartbeat(self, claim: Claim, done: threading.Event) -> None:
        while not done.wait(HEARTBEAT_S):
            self.stack.queue.heartbeat(claim)
            if self.stack.store.cancel_requested(claim.job_id):
                self.stack.backend.kill(claim.job_id)
