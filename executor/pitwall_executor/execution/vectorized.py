"""One attempt of one job, step by step (docs/architecture.md §2, steps 1–6).

``resolve data → write the slice → sandbox decides → trusted engine fills and accounts →
metrics and report → artifacts``. Each step is a function; :func:`run_attempt` strings
them together and turns every way a run can end into a status and a sentence.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pitwall import __version__ as sdk_version
from pitwall.bundle import Bundle, load_bundle
from pitwall.engine.audit import audit_weights, choose_cuts, describe, split_run
from pitwall.engine.metrics import metrics_for_spec
from pitwall.engine.report import write_report
from pitwall.engine.validate import validate_weights
from pitwall.engine.vectorized import EngineResult, run_vectorized
from pitwall.errors import PitwallError, StrategyOutputError
from pitwall.models import (
    MAX_EQUITY_POINTS,
    BacktestSpec,
    EngineKind,
    JobStatus,
    LookaheadAudit,
    Metrics,
)
from pitwall_executor.datalake.planner import load_bars, validate_request
from pitwall_executor.sandbox import SandboxOutcome, runner_request
from pitwall_executor.sandbox.results import decode_weights
from pitwall_executor.stack import Stack

STRATEGY_FAILED_EXIT = 3


@dataclass(frozen=True)
class AttemptResult:
    """How an attempt ended: the status, a one-line reason, and what it produced."""

    status: JobStatus
    reason: str | None = None
    metrics: Metrics | None = None
    files: tuple[Path, ...] = ()


def load_slice(stack: Stack, spec: BacktestSpec) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Step 1: the exact bars the job may see, and the data part of its manifest."""
    snapshot = stack.catalog.snapshot(spec.dataset, spec.version)
    files = validate_request(snapshot, spec.universe, spec.start, spec.end)
    bars = load_bars(stack.catalog, snapshot, spec.universe, spec.start, spec.end,
                     lake=stack.lake)
    if stack.lake is not None:
        stack.lake.release()  # the bars are in memory: the cache may evict the files again
    data = {"dataset": spec.dataset, "version": snapshot.version,
            "files": [{"path": f.path, "sha256": f.sha256} for f in files]}
    return bars, data


def stage_inputs(workdir: Path, bundle: Bundle, runner_spec: dict[str, Any],
                 bars: pl.DataFrame | None) -> None:
    """Step 2: the bundle and the sandbox's read-only input dir (spec, and bars if any)."""
    input_dir = workdir / "input"
    input_dir.mkdir(parents=True)
    if bars is not None:
        # The sandbox gets only this slice, never the lake: it cannot read past `end`.
        bars.write_ipc(input_dir / "bars.arrow", compression="uncompressed")
    (input_dir / "spec.json").write_text(json.dumps(runner_spec))
    bundle.extract(workdir / "bundle")
    for path in (workdir, input_dir, workdir / "bundle"):
        path.chmod(0o755)
    for path in input_dir.iterdir():
        path.chmod(0o444)


def prepare_inputs(stack: Stack, spec: BacktestSpec, bundle: Bundle, workdir: Path,
                   ) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Steps 1–2 of a vectorized job: the slice as Arrow IPC, the bundle, on disk."""
    bars, data = load_slice(stack, spec)
    stage_inputs(workdir, bundle, {
        "entrypoint": bundle.entrypoint, "params": spec.params, "seed": spec.seed,
        "audit": audit_plan(spec, bars),
    }, bars)
    return bars, data


def interpret_outcome(outcome: SandboxOutcome, spec: BacktestSpec) -> AttemptResult | None:
    """Map how the sandbox ended to a terminal result; None when it produced weights."""
    limits = spec.limits
    if outcome.cancelled:
        return AttemptResult(JobStatus.CANCELLED, "cancelled by the researcher")
    if outcome.timed_out:
        return AttemptResult(JobStatus.TIMED_OUT,
                             f"wall-clock limit of {limits.timeout_s:g} s exceeded; raise "
                             "limits.timeout_s or shorten the date range")
    if outcome.oom:
        return AttemptResult(JobStatus.FAILED,
                             f"memory limit of {limits.memory_mb} MiB exceeded; lower the "
                             "universe or raise limits.memory_mb")
    if outcome.exit_code == STRATEGY_FAILED_EXIT:
        return AttemptResult(JobStatus.FAILED, f"strategy raised {last_error_line(outcome.stderr)}"
                             "; see the job's log for the traceback")
    if outcome.exit_code != 0:
        return AttemptResult(JobStatus.FAILED,
                             f"the strategy process exited with code {outcome.exit_code} "
                             f"({last_error_line(outcome.stderr)}); see the job's log")
    return None


def last_error_line(stderr: bytes) -> str:
    """The last non-empty line of a log, which for a traceback names the error."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "no output"


# --- lookahead audit (issue 4): cuts in spec.json, one re-run per cut in the same sandbox ---
# Share of the wall-clock limit the runner may use for the full run plus its re-runs.
AUDIT_TIME_SHARE = 0.6


def audit_plan(spec: BacktestSpec, bars: pl.DataFrame) -> dict[str, Any] | None:
    """What the runner needs for the audit: the cuts and its budgets; None without audit."""
    if not spec.audit or spec.engine != EngineKind.VECTORIZED:
        return None
    cuts = choose_cuts(bars)
    if not cuts:
        return None
    return {"cuts": cuts, "max_bytes": spec.limits.output_mb * 2**20,
            "max_seconds": AUDIT_TIME_SHARE * spec.limits.timeout_s}


def decode_and_audit(bars: pl.DataFrame, outcome: SandboxOutcome, spec: BacktestSpec,
                     ) -> tuple[pl.DataFrame, LookaheadAudit | None]:
    """The validated weights of the full run and, if the job has one, the audit's verdict."""
    max_bytes = spec.limits.output_mb * 2**20
    plan = audit_plan(spec, bars)
    if plan is None:
        weights = decode_weights(outcome.stdout, max_bytes=max_bytes)
        return validate_weights(weights, bars, spec.universe), None
    table, outputs = split_run(outcome.stdout, n_cuts=len(plan["cuts"]), max_bytes=max_bytes)
    clean = validate_weights(table, bars, spec.universe)
    return clean, audit_weights(bars, clean, plan["cuts"], outputs, spec.universe)
# --- end lookahead audit ---


def account(bars: pl.DataFrame, outcome: SandboxOutcome, spec: BacktestSpec,
            ) -> tuple[EngineResult, LookaheadAudit | None]:
    """Step 5: validate the untrusted weights, then fill and account them, trusted."""
    clean, audit = decode_and_audit(bars, outcome, spec)
    result = run_vectorized(bars, clean, capital=spec.capital, costs=spec.costs,
                            execution=spec.execution)
    return result, audit


def accounted_equity(result: EngineResult) -> list[tuple[int, float]]:
    """The accounted equity curve as at most :data:`MAX_EQUITY_POINTS` ``(ts_ms, value)``
    points, evenly thinned, the last point kept."""
    frame = result.equity.select(pl.col("ts").dt.epoch("ms"), "equity")
    step = -(-frame.height // MAX_EQUITY_POINTS)
    if step > 1:
        frame = frame.reverse().gather_every(step).reverse()
    return [(int(ts), float(v)) for ts, v in frame.iter_rows()]


def run_attempt(stack: Stack, job_id: str, attempt: int, on_progress: Any = None) -> AttemptResult:
    """Run one attempt of a job end to end; never raises for a strategy's fault."""
    job = stack.store.get(job_id)
    spec = job.spec
    if spec.engine == EngineKind.EVENT:  # lock-step feeder over a live sandbox session
        from pitwall_executor.execution.event import run_event_attempt

        return run_event_attempt(stack, job_id, attempt, on_progress)
    workdir = stack.config.jobs_dir / job_id / f"attempt-{attempt}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    out_dir = stack.artifacts.attempt_dir(job_id, attempt)
    progress = on_progress or (lambda *_a: None)
    try:
        bundle = load_bundle(stack.store.bundle(job.bundle_sha256),
                             max_bytes=stack.config.max_bundle_mb * 2**20)
        bars, data = prepare_inputs(stack, spec, bundle, workdir)
        progress(0.1, f"loaded {bars.height} bars")
        outcome = stack.backend.run(runner_request(job_id, workdir, spec.limits))
        (out_dir / "log.txt").write_bytes(outcome.stderr)
        ended = interpret_outcome(outcome, spec)
        if ended is not None:
            return AttemptResult(ended.status, ended.reason, files=(out_dir / "log.txt",))
        progress(0.7, "strategy finished; accounting")
        result, audit = account(bars, outcome, spec)
        # A vectorized strategy decides every weight at once, so there is no running curve
        # to show while the sandbox runs: the equity exists only once the trusted engine has
        # accounted. It goes out now, thinned, before the metrics and the report.
        progress(0.8, "accounted; writing the report", accounted_equity(result))
        metrics = metrics_for_spec(result, bars, spec)
        if audit is not None:
            metrics = metrics.model_copy(update={"lookahead": audit})
        manifest = {
            "job_id": job_id, "attempt": attempt, "bundle_sha256": job.bundle_sha256,
            "entrypoint": bundle.entrypoint, "sdk_version": sdk_version, "spec": spec.model_dump(
                mode="json"), "data": data,
            "sandbox": {"backend": stack.backend.name,
                        "image": getattr(stack.backend, "image", None)},
            "lookahead_audit": describe(audit) if audit is not None else "not run",
        }
        paths = write_report(out_dir, result=result, metrics=metrics, manifest=manifest,
                             bars=bars, benchmark=spec.benchmark,
                             asked=(spec.start, spec.end))
        files = (*paths.files, out_dir / "log.txt")
        if audit is not None and audit.status == "flagged" and stack.config.audit_fail:
            # Metrics belong to completed jobs only; the report stays with the attempt.
            return AttemptResult(JobStatus.FAILED, describe(audit), files=files)
        return AttemptResult(JobStatus.COMPLETED, metrics=metrics, files=files)
    except StrategyOutputError as exc:
        return AttemptResult(JobStatus.FAILED, f"invalid strategy output: {exc}")
    except PitwallError as exc:
        return AttemptResult(JobStatus.FAILED, str(exc))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
