"""A vectorized attempt (docs/architecture.md §2 steps 3–5): the whole slice at once.

The sandbox reads the job's bars from its read-only input dir and answers with target
weights for every bar (Arrow IPC); the trusted engine validates them, fills next-bar and
accounts. Then the lookahead audit re-runs the strategy at secret cuts in a fresh sandbox
(:mod:`.audit`). A *stepped* run instead feeds the strategy the prefix of its bars up to
each decision time and keeps the weights of that time: point-in-time by construction,
nothing to audit. The rest of the attempt is the template's (:mod:`.attempt`).
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
import pyarrow as pa

from pitwall.engine.audit import describe, pending
from pitwall.engine.decisions import decision_label, decision_times
from pitwall.engine.metrics import metrics_for_spec
from pitwall.engine.validate import validate_weights
from pitwall.engine.vectorized import EngineResult, run_vectorized
from pitwall.models import (
    MAX_EQUITY_POINTS,
    BacktestSpec,
    EngineKind,
    JobStatus,
    LookaheadAudit,
    Metrics,
)
from pitwall.prefix_wire import AUDIT, AUDIT_FORK
from pitwall_executor.execution.attempt import (
    Accounted,
    Attempt,
    AttemptResult,
    Staged,
    stage_inputs,
    universe_moved,
)
from pitwall_executor.execution.audit import (
    SEED_SECRET,
    audit_id,
    audit_seed,
    audit_vectorized,
    prefix_spec,
    stepped_answers,
)
from pitwall_executor.execution.prefix_feed import Answer
from pitwall_executor.keys import load_secret
from pitwall_executor.sandbox import SandboxOutcome, runner_request
from pitwall_executor.sandbox.results import decode_weights


def members_only(staged: Staged, clean: pl.DataFrame, spec: BacktestSpec,
                 ) -> tuple[pl.DataFrame, dict[str, Any] | None]:
    """The weights the engine executes under a universe rule: 0 at every bar whose symbol
    is not a member (so nothing is held in it), the strategy's elsewhere; and the
    manifest's ``universe`` entry (the rule, how the universe moved, weights set to 0).
    Without a rule, ``clean`` as it is. The audit compares the strategy's own weights."""
    if staged.members is None or spec.universe_rule is None:
        return clean, None
    flags = staged.bars.select("ts", "symbol", "member")
    outside = flags.filter(~pl.col("member")).select("ts", "symbol")
    zeroed = clean.join(outside, on=["ts", "symbol"], how="semi").filter(
        pl.col("weight") != 0.0).height
    forced = pl.concat([clean.join(outside, on=["ts", "symbol"], how="anti"),
                        outside.with_columns(weight=pl.lit(0.0))], how="vertical_relaxed")
    traded = validate_weights(forced, staged.bars, spec.universe)
    return traded, {**universe_moved(staged, spec), "weights_zeroed": zeroed}


class VectorizedAttempt(Attempt):
    """The sandbox decides every weight at once (or at each decision time of a stepped
    run); the engine accounts them afterwards."""

    engine = EngineKind.VECTORIZED
    #: Run the engine while the lookahead audit runs; False: one after the other
    #: (bench/latency.py compares the two).
    overlap_audit: ClassVar[bool] = True
    _main_seconds = 0.0
    _stepped: tuple[list[Answer], str | None] | None = None
    #: The audit's sandbox, restored while the main run runs (:meth:`_prestart_audit`).
    _audit_start: Future[Any] | None = None

    def unsupported(self) -> str | None:
        """A stepped run feeds a live session, which a one-shot-only backend lacks."""
        if self.spec.stepped is None or callable(getattr(self.stack.backend, "start", None)):
            return None
        return (f"the {self.stack.backend.name} sandbox backend cannot run stepped runs "
                "(no live session); use gvisor or docker")

    def runner_inputs(self, staged: Staged) -> tuple[dict[str, Any], pl.DataFrame | None]:
        """A plain run gets ``spec.json`` and the bars as a file; a stepped run gets no
        bars at all (they come through the prefix channel)."""
        spec = self.spec
        if spec.stepped is not None:
            return prefix_spec("stepped", staged.bundle.entrypoint, spec), None
        return {"entrypoint": staged.bundle.entrypoint, "params": spec.params,
                "seed": spec.seed}, staged.bars

    def execute(self, staged: Staged) -> SandboxOutcome:
        """One sandbox run of the full slice, or the stepped session."""
        request = runner_request(self.job.id, self.workdir, self.spec.limits)
        started = time.monotonic()
        if self.spec.stepped is not None:
            times = decision_times(staged.bars, self.spec.stepped)
            answers, outcome, problem = stepped_answers(
                self.stack.backend, self.job.id, self.workdir, self.spec, staged.bars, times)
            self._stepped = (answers, problem)
            assert outcome is not None  # unsupported() refused a backend without sessions
        else:
            self._prestart_audit(staged)
            outcome = self.stack.backend.run(request)
        self._main_seconds = time.monotonic() - started
        return outcome

    def _prestart_audit(self, staged: Staged) -> None:
        """Start restoring the audit's fresh sandbox beside the main run, so its start is
        off the critical path (docs/lookahead-audit.md, "Independence"). It holds the
        bundle and ``spec.json`` only and waits for its first bars, which are sent once
        the main run has ended. Its wall clock starts now, so it covers the main run's
        limit and then its own."""
        start = getattr(self.stack.backend, "start", None)
        if not self.spec.audit or not callable(start):
            return
        limits = self.spec.limits.model_copy(
            update={"timeout_s": 2 * self.spec.limits.timeout_s})
        request = runner_request(audit_id(self.job.id), self._stage_audit(staged), limits)
        starter = ThreadPoolExecutor(1, thread_name_prefix=f"audit-{self.job.id[:8]}")
        self._audit_start = starter.submit(start, request)
        starter.shutdown(wait=False)

    def _stage_audit(self, staged: Staged) -> Path:
        """The audit sandbox's input dir: the bundle and its ``spec.json``, nothing else.
        The default level reloads the strategy per cut in one process; "thorough" pays a
        forked process per cut (docs/lookahead-audit.md, "Independence")."""
        mode = AUDIT_FORK if self.spec.audit_level == "thorough" else AUDIT
        audit_dir = self.workdir / "audit"
        stage_inputs(audit_dir, staged.bundle,
                     prefix_spec(mode, staged.bundle.entrypoint, self.spec), None)
        return audit_dir

    def _take_audit_session(self) -> Any:
        """The pre-started audit session (None: none was started); it is the caller's."""
        pending_start, self._audit_start = self._audit_start, None
        return pending_start.result() if pending_start is not None else None

    def release(self) -> None:
        """Stop an audit sandbox started for a run that ended before its audit."""
        with contextlib.suppress(Exception):  # failed to start: nothing to stop
            session = self._take_audit_session()
            if session is not None:
                session.kill()
                session.wait()

    def account(self, staged: Staged, outcome: SandboxOutcome) -> Accounted | AttemptResult:
        """Validate the untrusted weights, then fill and account them; the audit's verdict."""
        spec = self.spec
        with self.timed("progress"):
            self.progress(0.6, "strategy finished; validating")
        if self._stepped is not None:
            with self.timed("validate"):
                clean = self._stepped_weights(staged)
            if isinstance(clean, AttemptResult):
                return clean
            audit: LookaheadAudit | None = stepped_verdict()
            entries: dict[str, Any] = {"stepped": {
                "schedule": spec.stepped, "decisions": len(self._stepped[0]),
                "label": decision_label(spec.stepped or "")}}
        else:
            with self.timed("validate"):
                weights = decode_weights(outcome.stdout,
                                         max_bytes=spec.limits.output_mb * 2**20)
                clean = validate_weights(weights, staged.bars, spec.universe)
        with self.timed("validate"):
            traded, universe = members_only(staged, clean, spec)
        if self._stepped is None and spec.audit and self.overlap_audit:
            # The audit's session waits on its sandbox most of the time, and the engine
            # (compiled, Polars) releases the GIL: account while the audit runs, and show
            # the metrics as soon as they exist, their verdict pending (docs/architecture.md
            # §2, "metrics first"); the terminal commit carries the verdict.
            with ThreadPoolExecutor(1, thread_name_prefix=f"account-{self.job.id[:8]}") as pool:
                accounting = pool.submit(self._account_and_show, staged, traded)
                with self.timed("audit"):
                    audit, entries = self._audit(staged, clean)
                with self.timed("wait_engine"):
                    result, metrics = accounting.result()
        else:
            if self._stepped is None:
                with self.timed("audit"):
                    audit, entries = self._audit(staged, clean)
            result = self._account(staged, traded)
            metrics = self._metrics(staged, result)
        if universe is not None:
            entries["universe"] = universe
        if audit is not None:
            metrics = metrics.model_copy(update={"lookahead": audit})
        if result.corporate is not None:  # what the version's corporate actions did
            entries["corporate_actions"] = result.corporate.summary()
        entries["lookahead_audit"] = describe(audit) if audit is not None else "not run"
        refused = (audit is not None and audit.status in ("flagged", "not_run")
                   and self.stack.config.audit_fail)
        return Accounted(result, metrics, entries,
                         failure=describe(audit) if refused and audit is not None else None)

    def _metrics(self, staged: Staged, result: EngineResult) -> Metrics:
        # A vectorized strategy decides every weight at once, so there is no running curve
        # to show while the sandbox runs: the equity exists only once the trusted engine has
        # accounted. It goes out now, thinned, before the metrics and the report.
        with self.timed("progress"):
            self.progress(0.85, "accounted; computing the metrics", accounted_equity(result))
        with self.timed("metrics"):
            return metrics_for_spec(result, staged.trusted_bars, self.spec)

    def _account_and_show(self, staged: Staged,
                          clean: pl.DataFrame) -> tuple[EngineResult, Metrics]:
        """Account, then commit the metrics for clients to show while the audit runs."""
        result = self._account(staged, clean)
        metrics = self._metrics(staged, result)
        with self.timed("show_metrics"):
            self.progress(0.9, "metrics ready; the lookahead audit is running",
                          metrics=metrics.model_copy(
                              update={"lookahead": pending(self.spec.audit_level)}))
        return result, metrics

    def _account(self, staged: Staged, clean: pl.DataFrame) -> EngineResult:
        """The trusted engine over the validated weights."""
        spec = self.spec
        with self.timed("engine"):
            return run_vectorized(staged.bars, clean, capital=spec.capital, costs=spec.costs,
                                  execution=spec.execution, corporate=staged.corporate)

    def _audit(self, staged: Staged, clean: pl.DataFrame,
               ) -> tuple[LookaheadAudit | None, dict[str, Any]]:
        """The lookahead audit in a fresh sandbox whose inputs hold no bars and no cuts."""
        if not self.spec.audit:
            return None, {}
        self.progress(0.7, "auditing for lookahead")
        session = self._take_audit_session()
        audit_dir = self._stage_audit(staged) if session is None else self.workdir / "audit"
        secret = load_secret(self.stack.config.data_dir, SEED_SECRET)
        run = audit_vectorized(self.stack.backend, self.job.id, audit_dir, self.spec,
                               staged.bars, clean,
                               seed=audit_seed(secret, self.job.bundle_sha256, self.spec),
                               main_seconds=self._main_seconds,
                               budget_calls=self.stack.config.audit_budget,
                               session=session)
        log_path = self.out_dir / "log.txt"
        # The re-runs' output follows the main run's, within the same log cap.
        room = self.spec.limits.log_kb * 1024 - log_path.stat().st_size
        header = b"\n--- lookahead audit: the re-runs' output ---\n"
        if run.log and room > len(header):
            with log_path.open("ab") as log:
                log.write(header + run.log[: room - len(header)])
        return run.verdict, {"audit": run.record}

    def _stepped_weights(self, staged: Staged) -> pl.DataFrame | AttemptResult:
        """The weights of every decision time, validated against the whole slice."""
        assert self._stepped is not None
        answers, problem = self._stepped
        if problem is not None:
            return AttemptResult(JobStatus.FAILED, f"stepped run: {problem}")
        failed = next((a for a in answers if isinstance(a, str)), None)
        if failed is not None:
            return AttemptResult(JobStatus.FAILED, f"strategy raised during a stepped run: "
                                 f"{failed}; see the job's log")
        tables = [a for a in answers if isinstance(a, pa.Table)]
        if not tables:
            return AttemptResult(JobStatus.FAILED, "the stepped run had no decision time in "
                                 "the data; widen the dates or change the schedule")
        weights = pl.concat([pl.DataFrame(pl.from_arrow(t)) for t in tables],
                            how="vertical_relaxed")
        return validate_weights(weights, staged.bars, self.spec.universe)


def stepped_verdict() -> LookaheadAudit:
    """A stepped run's verdict: exact, since no call ever held a bar after its time."""
    verdict = LookaheadAudit(status="exact", tolerance=0.0)
    return verdict.model_copy(update={"statement": describe(verdict)})


def accounted_equity(result: EngineResult) -> list[tuple[int, float]]:
    """The accounted equity curve as at most :data:`MAX_EQUITY_POINTS` ``(ts_ms, value)``
    points, evenly thinned, the last point kept."""
    frame = result.equity.select(pl.col("ts").dt.epoch("ms"), "equity")
    step = -(-frame.height // MAX_EQUITY_POINTS)
    if step > 1:
        frame = frame.reverse().gather_every(step).reverse()
    return [(int(ts), float(v)) for ts, v in frame.iter_rows()]
