"""Workers: claim a job, run an attempt, record the outcome, acknowledge.

One :class:`Worker` is one slot. For each claim it starts an attempt in the database
(which also enforces the per-researcher quota, and records this process so recovery can
tell when it died), runs it while a heartbeat thread keeps both the queue claim and the
database attempt alive, then records the outcome fenced by the attempt number and
acknowledges the claim. The heartbeat also carries the two reasons to stop early: the
researcher cancelled, or the attempt was taken back (its worker was thought dead) — in
both cases the sandbox is killed. It keeps beating until the outcome is committed, so a
result that waits for the database (an outage) is not taken for a dead worker's.

An attempt ended by the platform rather than the strategy (``result.outage``: the lake,
the object store, the sandbox runtime, the database…) ends ``INFRA_FAILED`` and the job
goes back to the queue through the recovery path, until ``max_attempts`` attempts have
ended so; then the job fails with a reason that says it was not the strategy's fault.

Nothing here may kill the slot: :meth:`Worker.run_forever` runs under
:func:`~pitwall_executor.orchestration.health.run_guarded`, commits wait out a database
outage (:mod:`.retry`), and progress writes during one are skipped. A redelivered job
whose row is not PENDING is just acknowledged: the database decides.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pitwall.models import JobStatus
from pitwall_executor.execution import AttemptResult, Outage, run_attempt
from pitwall_executor.execution.attempt import fallback_report
from pitwall_executor.jobs.queue import HELD, Claim
from pitwall_executor.jobs.schema import HANDED_BACK, INFRA_FAILED
from pitwall_executor.jobs.store import AttemptOwner, ResearcherAtQuotaError, database_unreachable
from pitwall_executor.orchestration.health import (
    GIVE_UP_AFTER_S,
    STUCK_AFTER_S,
    Loop,
    is_outage,
    run_guarded,
)
from pitwall_executor.orchestration.progress import progress_reporter
from pitwall_executor.orchestration.retry import first_line, until_reachable
from pitwall_executor.sandbox import owner
from pitwall_executor.stack import Stack
from pitwall_executor.storage.artifacts import ArtifactError

log = logging.getLogger(__name__)
T = TypeVar("T")
HEARTBEAT_S = 1.0
QUOTA_PAUSE_S = 0.02  # after giving back a job whose researcher is at quota
QUOTA_WRAP_PAUSE_S = 0.5  # after seeing the same at-quota job again (the queue wrapped)
OUTAGE_PAUSE_S = 1.0  # after an attempt hit an outage: it is likely still on
COMMIT_WITHIN_S = 300.0  # how long a finished result waits for an unreachable database
_GAVE_BACK = -1  # _start: the claim went back to the queue (researcher at quota)
DB_OUTAGE = Outage("the metadata database could not be reached",
                   "the metadata database is reachable again")


class Worker:
    """One worker slot: runs one job at a time."""

    def __init__(self, stack: Stack, name: str | None = None,
                 publish: Callable[[str, str], None] | None = None,
                 loop: Loop | None = None) -> None:
        self.stack = stack
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.loop = loop or Loop(self.name, stuck_after_s=STUCK_AFTER_S,
                                 give_up_after_s=GIVE_UP_AFTER_S)
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
        """Claim and run one job; return its id, or None when the queue stayed empty.

        Raises what the queue or the database raised before a job started (the caller
        retries); once an attempt runs, its end is always recorded or handed back.
        """
        claim = self.stack.queue.claim(self.name, timeout=timeout)
        if claim is None:
            return None
        self._run_claim(claim)
        return claim.job_id

    def run_forever(self, stop: threading.Event) -> None:
        """Run jobs until ``stop`` is set (a running job is finished first), surviving
        every failure of the queue, the database or the sandbox."""
        run_guarded(self.loop, lambda: self.run_one(timeout=0.5), stop)

    def hand_back(self) -> None:
        """Stop the running job now and give it back to the queue (shutdown past grace)."""
        self._hand_back.set()
        job_id = self._current
        if job_id is not None:
            self.stack.backend.kill(job_id)

    def _start(self, claim: Claim) -> int | None:
        """The attempt number; None (not PENDING: ack); _GAVE_BACK (at quota)."""
        quota = self.stack.config.max_running_per_researcher
        me = owner.current()
        try:
            attempt = self.stack.store.start_attempt(
                claim.job_id, self.name, max_running=quota,
                owner=AttemptOwner(owner.host(), me.pid, me.start))
        except ResearcherAtQuotaError:
            self.stack.queue.release(claim)
            wrapped = claim.job_id in self._given_back
            self._given_back = set() if wrapped else self._given_back | {claim.job_id}
            time.sleep(QUOTA_WRAP_PAUSE_S if wrapped else QUOTA_PAUSE_S)
            return _GAVE_BACK
        self._given_back.clear()
        return attempt

    def _run_claim(self, claim: Claim) -> None:
        if self._hand_back.is_set():
            self.stack.queue.release(claim)
            return
        try:
            attempt = self._start(claim)
        except Exception:
            # Still PENDING (or opened unseen, then recovery takes it back): the entry
            # goes back to the queue and the caller backs off.
            self._quietly("release", lambda: self.stack.queue.release(claim))
            raise
        if attempt == _GAVE_BACK:
            return
        try:
            if attempt is not None:  # else cancelled or handled: the DB decides, not the queue
                self._run_started(claim, attempt)
        finally:
            self._quietly("ack", lambda: self.stack.queue.ack(claim))

    def _run_started(self, claim: Claim, attempt: int) -> None:
        job_id = claim.job_id
        if self._hand_back.is_set():  # shutdown arrived while the attempt was opening
            self._give_back(claim, attempt)
            return
        self._current = job_id
        self.publish_events(job_id)
        watch = _Watch()
        beat = threading.Thread(target=self._heartbeat, args=(claim, attempt, watch),
                                daemon=True, name=f"beat-{job_id[:8]}")
        beat.start()
        try:
            result = self._attempt(job_id, attempt, watch.lost)
            watch.recording.set()
            if result is not None:
                self._settle(claim, attempt, result, watch.lost)
        finally:
            watch.done.set()
            beat.join()
            self._current = None
        self.publish_events(job_id)

    def _attempt(self, job_id: str, attempt: int, lost: threading.Event) -> AttemptResult | None:
        """Run the attempt; None when it was taken back meanwhile (nothing to record)."""
        try:
            return run_attempt(self.stack, job_id, attempt, self._progress(job_id, attempt))
        except Exception as exc:
            if lost.is_set() or self._taken_back(job_id, attempt):
                # Its files were removed by whoever took it back: the error is expected.
                self._dropped(job_id, attempt, f"it ended in {first_line(exc)}")
                return None
            if database_unreachable(exc):
                what = f"{DB_OUTAGE.what} ({first_line(exc)})"
                return AttemptResult(JobStatus.FAILED, what,
                                     outage=Outage(what, DB_OUTAGE.rerun_when))
            log.exception("job %s attempt %d crashed the worker path", job_id, attempt)
            trace = traceback.format_exception_only(exc)[-1].strip()
            return AttemptResult(JobStatus.FAILED, f"internal error: {trace}; report this bug")

    def _settle(self, claim: Claim, attempt: int, result: AttemptResult,
                lost: threading.Event) -> None:
        job_id = claim.job_id
        cut_short = result.status is JobStatus.CANCELLED and not lost.is_set()
        if lost.is_set():
            self._dropped(job_id, attempt, "")
        elif (self._hand_back.is_set() and cut_short
              and not self._db("read the cancel flag",
                               lambda: self.stack.store.cancel_requested(job_id))):
            self._give_back(claim, attempt)
        elif result.outage is not None:
            self._after_outage(claim, attempt, result)
        else:
            self._record(claim, attempt, result)

    def _record(self, claim: Claim, attempt: int, result: AttemptResult) -> None:
        # Artifacts are stored (written by run_attempt, uploaded by describe) before the
        # fenced commit that references them.
        artifacts, job_id = self.stack.artifacts, claim.job_id
        started = time.perf_counter()
        try:
            rows = [artifacts.describe(p) for p in result.files if p.exists()]
        except ArtifactError as exc:  # the store is down past its retries
            log.warning("job %s attempt %d: %s", job_id, attempt, exc)
            artifacts.discard(job_id, attempt)
            rows, result = [], _unstored(result, exc)
        won = self._commit(
            job_id, attempt, result.status.value,
            lambda: self.stack.store.finish(job_id, attempt, result.status,
                                            reason=result.reason, metrics=result.metrics,
                                            artifact_rows=rows))
        result.timings["record"] = round(time.perf_counter() - started, 6)
        if won:
            # The status and the metrics are committed: clients see them now; the rest of
            # the report follows (docs/architecture.md §2, "record").
            self.publish_events(job_id)
            try:
                self._record_later(job_id, attempt, result)
            except Exception:  # the job has ended with its metrics: this slot goes on
                log.exception("job %s attempt %d: recording the report failed", job_id,
                              attempt)
            artifacts.committed(job_id, attempt)
        else:
            if won is not None:
                self._dropped(job_id, attempt, "")
            artifacts.discard(job_id, attempt)

    def _record_later(self, job_id: str, attempt: int, result: AttemptResult) -> None:
        """Write and record what the attempt left for after its commit (the HTML report,
        the ledgers), then an ``artifacts`` event naming them, with the attempt's stage
        timings (``data.timings``, seconds).

        The job keeps its status and metrics whatever happens here. A report that fails
        to write is replaced by a plain one that gives the reason and the recorded metrics;
        files that cannot be stored are logged and named in the event's ``error``.
        """
        artifacts, timings = self.stack.artifacts, result.timings
        error: str | None = None
        files: tuple[Path, ...] = ()
        try:
            if result.later is not None:
                files = result.later()
        except Exception as exc:  # a bug in the report, a full disk: the metrics stay
            log.exception("job %s attempt %d: the report could not be written", job_id,
                          attempt)
            error = f"the report could not be written ({first_line(exc)})"
            try:
                out_dir = artifacts.attempt_dir(job_id, attempt)
                files = (fallback_report(out_dir, result.metrics, first_line(exc)),)
            except Exception as again:
                log.warning("job %s attempt %d: no fallback report either (%s)", job_id,
                            attempt, first_line(again))
        started = time.perf_counter()
        rows = []
        for path in files:
            try:
                rows.append(artifacts.describe(path))
            except ArtifactError as exc:
                log.warning("job %s attempt %d: %s", job_id, attempt, exc)
                error = f"{path.name} could not be stored ({first_line(exc)})"
        payload: dict[str, object] = {"names": [r["name"] for r in rows],
                                      "timings": timings}
        if error is not None:
            payload["error"] = error

        def record() -> bool:
            timings["record_report"] = round(time.perf_counter() - started, 6)
            return self.stack.store.add_artifacts(job_id, attempt, rows, payload)

        if self._commit(job_id, attempt, "artifacts", record):
            self.publish_events(job_id)

    def _commit(self, job_id: str, attempt: int, outcome: str,
                call: Callable[[], bool]) -> bool | None:
        """Run the fenced transition ``call`` until the database takes it: True if it
        ended the attempt ``outcome``, False if the attempt was no longer current, None if
        the database stayed unreachable for :data:`COMMIT_WITHIN_S`."""
        tried = False

        def once() -> bool:
            nonlocal tried
            # A try that failed may still have committed before its connection died.
            if tried and self._ended_as(job_id, attempt, outcome):
                return True
            tried = True
            return call()

        try:
            return until_reachable(f"job {job_id} attempt {attempt}: {outcome}", once,
                                   within_s=COMMIT_WITHIN_S)
        except Exception as exc:
            if not database_unreachable(exc):
                raise
            log.error("job %s attempt %d: the outcome %s was not recorded, the database was "
                      "unreachable for %.0f s; the job runs again once recovery takes it back",
                      job_id, attempt, outcome, COMMIT_WITHIN_S)
            return None

    def _ended_as(self, job_id: str, attempt: int, outcome: str) -> bool:
        outcomes = self.stack.store.attempt_outcomes(job_id)
        return len(outcomes) >= attempt and outcomes[attempt - 1] == outcome

    def _after_outage(self, claim: Claim, attempt: int, result: AttemptResult) -> None:
        """Run the job again after an infrastructure failure, or fail it once
        ``max_attempts`` attempts have ended so, saying it was not the strategy's fault."""
        assert result.outage is not None
        job_id, outage = claim.job_id, result.outage
        ended = self._db("count the failed attempts",
                         lambda: self.stack.store.attempt_outcomes(job_id))
        used, limit = ended.count(INFRA_FAILED) + 1, self.stack.config.max_attempts
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
        back = self._commit(job_id, attempt, INFRA_FAILED, lambda: self.stack.store.hand_back(
            job_id, attempt, outcome=INFRA_FAILED, reason=note))
        if back:
            self._hand_back.wait(OUTAGE_PAUSE_S)  # the outage is likely still on: not at once
            self._requeue(job_id)
        elif back is not None:
            self._dropped(job_id, attempt, "")

    def _give_back(self, claim: Claim, attempt: int) -> None:
        job_id = claim.job_id
        self.stack.artifacts.discard(job_id, attempt)
        if self._commit(job_id, attempt, HANDED_BACK,
                        lambda: self.stack.store.hand_back(job_id, attempt)):
            # Enqueue before the ack: a crash in between leaves a duplicate, not a loss.
            self._requeue(job_id)
            log.info("job %s attempt %d handed back on shutdown", job_id, attempt)

    def _requeue(self, job_id: str) -> None:
        # Not queued (Redis down too)? The job is PENDING: recovery's reconcile queues it.
        def enqueue() -> None:
            priority = self.stack.store.priority_of(job_id)
            self.stack.queue.enqueue(job_id, priority=priority)
        self._quietly("requeue", enqueue)

    def _dropped(self, job_id: str, attempt: int, how: str) -> None:
        """The attempt was taken back (its worker was thought dead): its end is not ours to
        record, and its files go. Expected after a pause or an outage: not an error."""
        log.info("job %s: dropped: attempt %d was taken back%s", job_id, attempt,
                 f" ({how})" if how else "")
        self._quietly("discard", lambda: self.stack.artifacts.discard(job_id, attempt),
                      any_error=True)

    def _taken_back(self, job_id: str, attempt: int) -> bool:
        try:
            return self.stack.store.beat(job_id, attempt) == "lost"
        except Exception:  # the database is down: it cannot say, assume not
            return False

    def _db(self, what: str, call: Callable[[], T]) -> T:
        return until_reachable(f"{self.name}: {what}", call, within_s=COMMIT_WITHIN_S)

    def _progress(self, job_id: str, attempt: int) -> Callable[..., None]:
        return progress_reporter(self.stack.store, job_id, attempt,
                                 lambda: self.publish_events(job_id))

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
            log.warning("job %s: could not publish events (%s)", job_id, first_line(exc))
        self._published[job_id] = after

    def _heartbeat(self, claim: Claim, attempt: int, watch: _Watch) -> None:
        job_id, beat_queue, failing = claim.job_id, True, False
        while not watch.done.wait(HEARTBEAT_S):
            self.loop.tick()  # the slot is alive: its job is watched
            if beat_queue:
                beat_queue = self._beat_queue(claim)
            try:
                state = self.stack.store.beat(job_id, attempt)
            except Exception as exc:  # the DB may be down a while; keep running the job
                if not failing:
                    log.warning("job %s: database heartbeat failed (%s); the job runs on",
                                job_id, first_line(exc))
                failing = True
                continue
            failing = False
            if watch.recording.is_set():
                continue  # the sandbox is gone; the commit may end the attempt any moment
            if state == "lost" and not watch.lost.is_set():
                log.warning("job %s attempt %d was taken back by recovery; stopping it",
                            job_id, attempt)
                watch.lost.set()
            if state != "live" or self._hand_back.is_set():
                # Repeated each beat: a kill before the sandbox exists has no effect.
                self._quietly("kill", lambda: self.stack.backend.kill(job_id), any_error=True)

    def _beat_queue(self, claim: Claim) -> bool:
        """Renew the queue claim; False once the queue no longer holds it (beating stops:
        the database's attempt decides who runs the job, the queue says it once)."""
        try:
            return self.stack.queue.heartbeat(claim) == HELD
        except Exception as exc:
            if not is_outage(exc):
                log.warning("job %s: queue heartbeat failed (%s)", claim.job_id,
                            first_line(exc), exc_info=True)
            return True  # the queue is down: try again next beat

    def _quietly(self, what: str, call: Callable[[], object], *,
                 any_error: bool = False) -> None:
        try:
            call()
        except Exception as exc:
            if not (any_error or is_outage(exc)):
                raise
            log.warning("worker %s: %s failed (%s); recovery will reconcile", self.name, what,
                        first_line(exc))


@dataclass
class _Watch:
    """What the heartbeat thread of one attempt and its slot tell each other."""

    done: threading.Event = field(default_factory=threading.Event)  # stop beating
    lost: threading.Event = field(default_factory=threading.Event)  # taken back meanwhile
    recording: threading.Event = field(default_factory=threading.Event)  # ran; committing


def _unstored(result: AttemptResult, exc: ArtifactError) -> AttemptResult:
    """The outcome of an attempt whose files could not be stored: a completed run fails (its
    metrics would point at no report); any other end keeps its status and says why."""
    if result.status is JobStatus.COMPLETED:
        return AttemptResult(JobStatus.FAILED, f"the run completed but its results could not "
                             f"be stored: {exc}. Rerun the job once the artifact store is "
                             "reachable")
    note = f"its files could not be stored: {exc}"
    return AttemptResult(result.status, f"{result.reason}; {note}" if result.reason else note)
