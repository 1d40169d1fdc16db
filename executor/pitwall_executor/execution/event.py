"""One attempt of an event-driven job (``spec.engine == "event"``), docs/architecture.md §2 step 4.

Like the vectorized path, but the sandbox never receives a file of bars: its input dir
holds only ``spec.json``. The worker starts a live sandbox session and the trusted
feeder (:mod:`pitwall_executor.execution.feeder`) streams the bars in lock-step while the broker
fills and accounts; metrics and the report are the engine's, unchanged. While it runs,
the progress events carry the broker's mark-to-market equity (the running curve).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from pitwall import __version__ as sdk_version
from pitwall.bundle import Bundle, load_bundle
from pitwall.engine.broker import BrokerCosts
from pitwall.engine.market import Market
from pitwall.engine.metrics import metrics_for_spec
from pitwall.engine.report import write_report
from pitwall.errors import PitwallError, StrategyOutputError
from pitwall.models import BacktestSpec, JobStatus
from pitwall_executor.execution.feeder import FeedStats, StrategyStopped, run_lockstep
from pitwall_executor.execution.vectorized import (
    AttemptResult,
    interpret_outcome,
    load_slice,
    stage_inputs,
)
from pitwall_executor.sandbox import affinity, runner_request
from pitwall_executor.stack import Stack

#: Least time between two progress events of a running event job: the feeder ticks about
#: 50 times a run, and a fast run must not wait on 50 database writes.
PROGRESS_EVERY_S = 0.25


class EquityProgress:
    """The feeder's ticks ``(fraction, ts_ms, equity)`` turned into progress reports that
    carry the equity points since the previous report: one report at most every
    ``every_s`` (the first tick at once), and :meth:`flush` for the rest at the end."""

    def __init__(self, report: Callable[..., None], every_s: float = PROGRESS_EVERY_S) -> None:
        self.report = report
        self.every_s = every_s
        self.points: list[tuple[int, float]] = []
        self.fraction = 0.0
        self._last = -float("inf")

    def __call__(self, fraction: float, ts_ms: int, equity: float) -> None:
        self.points.append((ts_ms, equity))
        self.fraction = fraction
        if time.monotonic() - self._last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.points:
            self.report(0.1 + 0.7 * self.fraction, "feeding bars", self.points)
            self.points = []
        self._last = time.monotonic()


def prepare_event_inputs(stack: Stack, spec: BacktestSpec, bundle: Bundle, workdir: Path,
                         ) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The bars (kept in the worker: the feeder sends them bar by bar) and the sandbox's
    input dir, which holds ``spec.json`` only."""
    bars, data = load_slice(stack, spec)
    stage_inputs(workdir, bundle, {
        "kind": "event", "entrypoint": bundle.entrypoint, "params": spec.params,
        "seed": spec.seed, "symbols": list(spec.universe), "capital": spec.capital,
    }, None)
    return bars, data


def feed_session(stack: Stack, job_id: str, workdir: Path, spec: BacktestSpec, bars: pl.DataFrame,
                 progress: Any) -> tuple[Any, Any, FeedStats | None]:
    """Start the sandbox, feed it, and wait for it; ``(outcome, result, stats)``.

    ``result`` is None when the strategy stopped (raised, timed out, was cancelled):
    the outcome then says why.
    """
    market = Market.from_bars(bars, spec.universe)
    backend: Any = stack.backend  # an InteractiveBackend (checked by the caller)
    session = backend.start(runner_request(job_id, workdir, spec.limits))
    result = stats = None
    ticks = EquityProgress(progress)
    # Lock-step is sequential: the feeder and a one-CPU sandbox share a core (affinity.py).
    pinned = affinity.shared_cpu(session) if spec.limits.cpus <= 1 else contextlib.nullcontext()
    try:
        with pinned:
            result, stats = run_lockstep(
                session.stdin, session.stdout, market, capital=spec.capital,
                costs=BrokerCosts.from_costs(spec.costs), progress=ticks)
        ts_ms, equity = result.equity.select(pl.col("ts").dt.epoch("ms"), "equity").row(-1)
        ticks.fraction = 1.0
        ticks.points.append((ts_ms, equity))  # the curve's last point
        ticks.flush()
    except StrategyStopped:
        pass
    except BaseException:
        session.kill()  # a protocol violation: stop the sandbox before reporting it
        raise
    finally:
        with contextlib.suppress(OSError):
            session.stdin.close()
        outcome = session.wait()
    return outcome, result, stats


def run_event_attempt(stack: Stack, job_id: str, attempt: int, on_progress: Any = None,
                      ) -> AttemptResult:
    """Run one attempt of an event-driven job end to end; never raises for a strategy's fault."""
    job = stack.store.get(job_id)
    spec = job.spec
    workdir = stack.config.jobs_dir / job_id / f"attempt-{attempt}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    out_dir = stack.artifacts.attempt_dir(job_id, attempt)
    progress = on_progress or (lambda *_a: None)
    if not callable(getattr(stack.backend, "start", None)):
        return AttemptResult(JobStatus.FAILED, f"the {stack.backend.name} sandbox backend cannot "
                             "run event-driven strategies (no live session); use gvisor")
    try:
        bundle = load_bundle(stack.store.bundle(job.bundle_sha256),
                             max_bytes=stack.config.max_bundle_mb * 2**20)
        bars, data = prepare_event_inputs(stack, spec, bundle, workdir)
        progress(0.1, f"loaded {bars.height} bars")
        outcome, result, stats = feed_session(stack, job_id, workdir, spec, bars, progress)
        (out_dir / "log.txt").write_bytes(outcome.stderr)
        ended = interpret_outcome(outcome, spec)
        if ended is not None:
            return AttemptResult(ended.status, ended.reason, files=(out_dir / "log.txt",))
        if result is None or stats is None:
            return AttemptResult(JobStatus.FAILED, "the strategy process stopped answering the "
                                 "feeder; see the job's log", files=(out_dir / "log.txt",))
        progress(0.85, "strategy finished; reporting")
        metrics = metrics_for_spec(result, bars, spec)
        manifest = {
            "job_id": job_id, "attempt": attempt, "bundle_sha256": job.bundle_sha256,
            "entrypoint": bundle.entrypoint, "sdk_version": sdk_version, "spec": spec.model_dump(
                mode="json"), "data": data, "sandbox": stack.backend.name, "engine": "event",
            "lockstep": {"bars": stats.bars, "round_trips": stats.round_trips,
                         "seconds": round(stats.seconds, 3)},
        }
        paths = write_report(out_dir, result=result, metrics=metrics, manifest=manifest,
                             bars=bars, benchmark=spec.benchmark,
                             asked=(spec.start, spec.end))
        return AttemptResult(JobStatus.COMPLETED, metrics=metrics,
                             files=(*paths.files, out_dir / "log.txt"))
    except StrategyOutputError as exc:
        return AttemptResult(JobStatus.FAILED, f"invalid strategy output: {exc}")
    except PitwallError as exc:
        return AttemptResult(JobStatus.FAILED, str(exc))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
