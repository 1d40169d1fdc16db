"""One attempt of one job, step by step (DESIGN.md §2, steps 1–6).

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
from pitwall.engine.execution import EngineResult, run_vectorized
from pitwall.engine.metrics import compute_metrics
from pitwall.engine.report import write_report
from pitwall.engine.validate import validate_weights
from pitwall.errors import PitwallError, StrategyOutputError
from pitwall.models import BacktestSpec, JobStatus, Metrics
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


def prepare_inputs(stack: Stack, spec: BacktestSpec, bundle: Bundle, workdir: Path,
                   ) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Steps 1–2: the exact slice of bars the job may see, and the bundle, on disk."""
    snapshot = stack.catalog.snapshot(spec.dataset, spec.version)
    files = validate_request(snapshot, spec.universe, spec.start, spec.end)
    bars = load_bars(stack.catalog, snapshot, spec.universe, spec.start, spec.end)
    input_dir = workdir / "input"
    input_dir.mkdir(parents=True)
    # The sandbox gets only this slice, never the lake: it cannot read past `end`.
    bars.write_ipc(input_dir / "bars.arrow", compression="uncompressed")
    (input_dir / "spec.json").write_text(json.dumps({
        "entrypoint": bundle.entrypoint, "params": spec.params, "seed": spec.seed,
    }))
    bundle.extract(workdir / "bundle")
    for path in (workdir, input_dir, workdir / "bundle"):
        path.chmod(0o755)
    for path in input_dir.iterdir():
        path.chmod(0o444)
    data = {"dataset": spec.dataset, "version": snapshot.version,
            "files": [{"path": f.path, "sha256": f.sha256} for f in files]}
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


def account(bars: pl.DataFrame, outcome: SandboxOutcome, spec: BacktestSpec) -> EngineResult:
    """Step 5: validate the untrusted weights, then fill and account them, trusted."""
    weights = decode_weights(outcome.stdout, max_bytes=spec.limits.output_mb * 2**20)
    clean = validate_weights(weights, bars, spec.universe)
    return run_vectorized(bars, clean, capital=spec.capital, costs=spec.costs)


def run_attempt(stack: Stack, job_id: str, attempt: int, on_progress: Any = None) -> AttemptResult:
    """Run one attempt of a job end to end; never raises for a strategy's fault."""
    job = stack.store.get(job_id)
    spec = job.spec
    workdir = stack.config.jobs_dir / job_id / f"attempt-{attempt}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    out_dir = stack.artifacts.attempt_dir(job_id, attempt)
    progress = on_progress or (lambda _p, _m: None)
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
        result = account(bars, outcome, spec)
        metrics = compute_metrics(result)
        manifest = {
            "job_id": job_id, "attempt": attempt, "bundle_sha256": job.bundle_sha256,
            "entrypoint": bundle.entrypoint, "sdk_version": sdk_version, "spec": spec.model_dump(
                mode="json"), "data": data, "sandbox": stack.backend.name,
        }
        paths = write_report(out_dir, result=result, metrics=metrics, manifest=manifest)
        files = (paths.metrics_json, paths.equity_parquet, paths.report_html, out_dir / "log.txt")
        return AttemptResult(JobStatus.COMPLETED, metrics=metrics, files=files)
    except StrategyOutputError as exc:
        return AttemptResult(JobStatus.FAILED, f"invalid strategy output: {exc}")
    except PitwallError as exc:
        return AttemptResult(JobStatus.FAILED, str(exc))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
