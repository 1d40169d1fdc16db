"""Workers: claim a job, run an attempt, record the outcome, acknowledge.

One :class:`Worker` is one slot. For each claim it starts an attempt in the database
(which also enforces the per-researcher quota), runs it while a heartbeat thread keeps
both the queue claim and the database attempt alive, then records the outcome fenced
by the attempt number and acknowledges the claim. The heartbeat also carries the two
reasons to stop early: the researcher cancelled, or the attempt was taken back (its
worker was thought dead) — in both cases the sandbox is killed.

An attempt ended by the platform rather than the strategy (``result.outage``: the lake,
the object store, the sandbox runtime…) ends ``INFRA_FAILED`` and the job goes back to
the queue through the recovery path, until ``max_attempts`` attempts have ended so; then
the job fails with a reason that says it was not the strategy's fault.

A redelivered job whose row is not PENDING is just acknowledged: the database decides.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Sequence

from pitwall.models import JobStatus
from pitwall_executor.execution import AttemptResult, run_attempt
from pitwall_executor.jobs.queue import Claim
from pitwall_executor.jobs.store import ResearcherAtQuotaError
from pitwall_executor.stack import Stack
from pitwall_executor.storage.artifacts import ArtifactError

log = logging.getLogger(__name__)
HEARTBEAT_S = 1.0
QUOTA_PAUSE_S = 0.02  # after giving back a job whose researcher is at quota
QUOTA_WRAP_PAUSE_S = 0.5  # after seeing the same at-quota job again (the queue wrapped)
OUTAGE_PAUSE_S = 1.0  # after the queue could not be reached, or an attempt hit an outage
INFRA_FAILED = "INFRA_FAILED"  # attempts.outcome of an attempt the platform ended
_GAVE_BACK = -1  # _start: the claim went back to the queue (researcher at quota)


class Worker:
    """One worker slot: runs one job at a time."""

    def __init__(self, stack: Stack, name: str | None = None,
                 publish: Callable[[str, str], None] | None = None) -> None:
        self.stack = stack
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self._publish = publish
        self._published: dict[str, int] = {}
        self._given_back: set[str] = set()
        self._hand_back = threading.Event()  # set by shutdown: stop now, return the job
        self._current: str | None = None

    @property
    def busy(self) -> bool:
        """True while an attempt runs."""
        return self._current is not None

    def run_one(self, timeout: float = 1.0) -> str | None:
        """Claim and run one job; return its id, or None when the queue stayed empty."""
        try:
            claim = self.stack.queue.claim(self.name, timeout=timeout)
        except Exception as exc:  # Redis down or restarting: wait, the DB keeps the jobs
            if not _is_outage(exc):
                raise
            log.warning("worker %s: the queue is unreachable (%s); retrying", self.name, exc)
            time.sleep(OUTAGE_PAUSE_S)
            return None
        if claim is None:
            return None
        released = False
        try:
            released = self._run_claim(claim)
        finally:
            if not released:
                self._quietly("ack", lambda: self.stack.queue.ack(claim))
        return claim.job_id

    def run_forever(self, stop: threading.Event) -> None:
        """Run jobs until ``stop`` is set (a running job is finished first)."""
        while not stop.is_set():
            self.run_one(timeout=0.5)

    def hand_back(self) -> None:
        """Stop the running job now and give it back to the queue (shutdown past grace)."""
        self._hand_back.set()
        job_id = self._current
        if job_id is not None:
            self.stack.backend.kill(job_id)

    def _start(self, claim: Claim) -> int | None:
        """The attempt number; None (not PENDING: ack); _GAVE_BACK (at quota)."""
        quota = self.stack.config.max_running_per_researcher
        try:
            attempt = self.stack.store.start_attempt(claim.job_id, self.name, max_running=quota)
        except ResearcherAtQuotaError:
            self.stack.queue.release(claim)
            wrapped = claim.job_id in self._given_back
            self._given_back = set() if wrapped else self._given_back | {claim.job_id}
            time.sleep(QUOTA_WRAP_PAUSE_S if wrapped else QUOTA_PAUSE_S)
            return _GAVE_BACK
        self._given_back.clear()
        return attempt

    def _run_claim(self, claim: Claim) -> bool:
        """Run the claim's job; True if the claim was given back instead (no ack)."""
        if self._hand_back.is_set():
            self.stack.queue.release(claim)
            return True
        attempt = self._start(claim)
        if attempt == _GAVE_BACK:
            return True
        if attempt is None:
            return False  # cancelled or already handled: the DB decides, not the queue
        job_id = claim.job_id
        if self._hand_back.is_set():  # shutdown arrived while the attempt was opening
            self._give_back(claim, attempt)
            return False
        self._current = job_id
        self.publish_events(job_id)
        done, lost = threading.Event(), threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(claim, attempt, done, lost),
                                daemon=True, name=f"beat-{job_id[:8]}")
        beat.start()
        try:
            result = run_attempt(self.stack, job_id, attempt, self._progress(job_id, attempt))
        except Exception as exc:  # a bug on the trusted side must still end the job
            log.exception("job %s attempt %d crashed the worker path", job_id, attempt)
            trace = traceback.format_exception_only(exc)[-1].strip()
            result = AttemptResult(JobStatus.FAILED, f"internal error: {trace}; report this bug")
        finally:
            done.set()
            beat.join()
            self._current = None
        cut_short = result.status is JobStatus.CANCELLED and not lost.is_set()
        if (self._hand_back.is_set() and cut_short
                and not self.stack.store.cancel_requested(job_id)):
            self._give_back(claim, attempt)
        elif result.outage is not None and not lost.is_set():
            self._after_outage(claim, attempt, result)
        else:
            self._record(claim, attempt, result)
        self.publish_events(job_id)
        return False

    def _record(self, claim: Claim, attempt: int, result: AttemptResult) -> None:
        # Artifacts are stored (written by run_attempt, uploaded by describe) before the
        # fenced commit that references them.
        artifacts = self.stack.artifacts
        try:
            rows = [artifacts.describe(p) for p in result.files if p.exists()]
        except ArtifactError as exc:  # the store is down past its retries
            log.warning("job %s attempt %d: %s", claim.job_id, attempt, exc)
            artifacts.discard(claim.job_id, attempt)
            rows, result = [], _unstored(result, exc)
        won = self.stack.store.finish(claim.job_id, attempt, result.status, reason=result.reason,
                                      metrics=result.metrics, artifact_rows=rows)
        if won:
            artifacts.committed(claim.job_id, attempt)
        else:
            log.warning("job %s attempt %d was taken back meanwhile; result dropped",
                        claim.job_id, attempt)
            artifacts.discard(claim.job_id, attempt)

    def _after_outage(self, claim: Claim, attempt: int, result: AttemptResult) -> None:
        """Run the job again after an infrastructure failure, or fail it once
        ``max_attempts`` attempts have ended so, saying it was not the strategy's fault."""
        assert result.outage is not None
        job_id, outage = claim.job_id, result.outage
        used = self.stack.store.attempt_outcomes(job_id).count(INFRA_FAILED) + 1
        limit = self.stack.config.max_attempts
        log.warning("job %s attempt %d ended on an infrastructure failure (%d of %d): %s",
                    job_id, attempt, used, limit, outage.what)
        if used >= limit:
            reason = (f"infrastructure failure, not your strategy: {outage.what}; attempts: "
                      f"{used}; rerun the job once {outage.rerun_when}")
            self._record(claim, attempt, AttemptResult(JobStatus.FAILED, reason,
                                                       files=result.files))
            return
        self.stack.artifacts.discard(job_id, attempt)
        note = (f"infrastructure failure, not your strategy: {outage.what}; the job will run "
                f"again ({used} of {limit} attempts used)")
        if self.stack.store.hand_back(job_id, attempt, outcome=INFRA_FAILED, reason=note):
            self._hand_back.wait(OUTAGE_PAUSE_S)  # the outage is likely still on: not at once
            priority = self.stack.store.priority_of(job_id)
            # Not queued (Redis down too)? The job is PENDING: recovery's reconcile queues it.
            self._quietly("requeue", lambda: self.stack.queue.enqueue(job_id, priority=priority))

    def _give_back(self, claim: Claim, attempt: int) -> None:
        job_id = claim.job_id
        self.stack.artifacts.discard(job_id, attempt)
        if self.stack.store.hand_back(job_id, attempt):
            # Enqueue before the ack: a crash in between leaves a duplicate, not a loss.
            self.stack.queue.enqueue(job_id, priority=self.stack.store.priority_of(job_id))
            log.info("job %s attempt %d handed back on shutdown", job_id, attempt)

    def _progress(self, job_id: str, attempt: int) -> Callable[..., None]:
        """``report(progress, message, equity=())``: persist, then publish the event."""
        def report(progress: float, message: str,
                   equity: Sequence[tuple[int, float]] = ()) -> None:
            self.stack.store.set_progress(job_id, attempt, progress, message, equity)
            self.publish_events(job_id)
        return report

    def publish_events(self, job_id: str) -> None:
        """Publish the job's events not published yet (Redis pub/sub), if a publisher is set."""
        if self._publish is None:
            return
        after = self._published.get(job_id, 0)
        try:
            for event in self.stack.store.events(job_id, after=after):
                self._publish(job_id, event.model_dump_json())
                after = event.seq
        except Exception as exc:  # live events are best effort; the DB keeps them all
            log.warning("job %s: could not publish events (%s)", job_id, exc)
        self._published[job_id] = after

    def _heartbeat(self, claim: Claim, attempt: int, done: threading.Event,
                   lost: threading.Event) -> None:
        while not done.wait(HEARTBEAT_S):
            self._quietly("queue heartbeat", lambda: self.stack.queue.heartbeat(claim))
            try:
                state = self.stack.store.beat(claim.job_id, attempt)
            except Exception as exc:  # the DB may be briefly down; keep running the job
                log.warning("job %s: database heartbeat failed (%s)", claim.job_id, exc)
                continue
            if state == "lost":
                log.warning("job %s attempt %d was taken back by recovery; stopping it",
                            claim.job_id, attempt)
                lost.set()
            if state != "live" or self._hand_back.is_set():
                # Repeated each beat: a kill before the sandbox exists has no effect.
                self.stack.backend.kill(claim.job_id)

    def _quietly(self, what: str, call: Callable[[], object]) -> None:
        try:
            call()
        except Exception as exc:
            if not _is_outage(exc):
                raise
            log.warning("worker %s: %s failed (%s); recovery will reconcile", self.name, what,
                        exc)


def _unstored(result: AttemptResult, exc: ArtifactError) -> AttemptResult:
    """The outcome of an attempt whose files could not be stored: a completed run fails (its
    metrics would point at no report); any other end keeps its status and says why."""
    if result.status is JobStatus.COMPLETED:
        return AttemptResult(JobStatus.FAILED, f"the run completed but its results could not "
                             f"be stored: {exc}. Rerun the job once the artifact store is "
                             "reachable")
    note = f"its files could not be stored: {exc}"
    return AttemptResult(result.status, f"{result.reason}; {note}" if result.reason else note)


def _is_outage(exc: Exception) -> bool:
    """A connection-level failure of Redis (down, restarting, lost its data)."""
    import redis

    return isinstance(exc, redis.ConnectionError | redis.TimeoutError | ConnectionError) or (
        isinstance(exc, redis.ResponseError) and "LOADING" in str(exc))
