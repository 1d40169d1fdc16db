"""The lookahead audit of a vectorized attempt, and stepped runs: both feed the strategy
prefixes of its bars through a fresh sandbox session (docs/lookahead-audit.md).

The audit runs after the main run, in a sandbox of its own that never held the full
slice (its input dir has ``spec.json`` and the bundle only; no cut list anywhere): the
worker sends the bars in time order and, at each cut, a fresh process inside answers on
``bars[ts <= cut]``. The cuts come from a secret seed drawn here, recorded in the
manifest after the run. A session that cannot run (no live-session backend) or breaks
the protocol ends the audit with a verdict that says so, never with a silent pass.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pitwall.engine.audit import audit_weights
from pitwall.engine.audit_cuts import CutPlan, plan_cuts
from pitwall.errors import StrategyOutputError
from pitwall.models import BacktestSpec, LookaheadAudit
from pitwall_executor.execution.prefix_feed import Answer, feed_prefixes
from pitwall_executor.sandbox import SandboxBackend, SandboxOutcome, runner_request

#: The audit's time budget, as a multiple of the main run's wall time (at least
#: MIN_BUDGET_S): cuts not reached by then are reported unchecked, never passed.
BUDGET_FACTOR = 2.0
MIN_BUDGET_S = 5.0


@dataclass(frozen=True)
class AuditRun:
    """The verdict and what the manifest records to reproduce it."""

    verdict: LookaheadAudit
    record: dict[str, Any]
    log: bytes = b""  # the re-run sandbox's stderr, for the job's log


def audit_vectorized(backend: SandboxBackend, job_id: str, workdir: Path, spec: BacktestSpec,
                     bars: pl.DataFrame, weights: pl.DataFrame, *,
                     main_seconds: float) -> AuditRun:
    """Re-run the strategy at secret cuts in a fresh sandbox and compare with ``weights``
    (the full run's, validated). ``workdir`` holds the bundle and an input dir whose
    ``spec.json`` is :func:`prefix_spec` in ``audit`` mode, and nothing else."""
    seed = secrets.randbits(63)
    plan = plan_cuts(bars, seed=seed, level=spec.audit_level)
    started = time.monotonic()
    budget = max(BUDGET_FACTOR * main_seconds, MIN_BUDGET_S)
    answers, problem, log = _answers(backend, f"{job_id}-audit", workdir, spec, bars,
                                     plan.times, deadline=started + budget)
    if problem is not None:
        answers = [problem] * len(plan.cuts)
    verdict = audit_weights(bars, weights, plan, answers, spec.universe)
    if problem is not None and "protocol" in problem:
        verdict = verdict.model_copy(update={
            "status": "flagged", "notes": [*verdict.notes, problem],
            "statement": f"lookahead audit flagged: {problem}"})
    return AuditRun(verdict, _record(plan, verdict, time.monotonic() - started), log)


def prefix_spec(mode: str, entrypoint: str, spec: BacktestSpec) -> dict[str, Any]:
    """The ``spec.json`` of a prefix session (``audit`` or ``stepped``): what the runner
    needs to load and call the strategy, and nothing about when it will be called."""
    return {"kind": "prefixes", "mode": mode, "entrypoint": entrypoint, "params": spec.params,
            "seed": spec.seed}


def stepped_answers(backend: SandboxBackend, job_id: str, workdir: Path, spec: BacktestSpec,
                    bars: pl.DataFrame, times: Sequence[int],
                    ) -> tuple[list[Answer], SandboxOutcome | None, str | None]:
    """A stepped run: one process answers at every decision time on the prefix so far
    (``workdir``'s spec.json is :func:`prefix_spec` in ``stepped`` mode)."""
    return _session(backend, job_id, workdir, spec, bars, times, deadline=None)


def _answers(backend: SandboxBackend, job_id: str, workdir: Path, spec: BacktestSpec,
             bars: pl.DataFrame, times: Sequence[int], *,
             deadline: float) -> tuple[list[Answer], str | None, bytes]:
    if not times:
        return [], None, b""
    answers, outcome, problem = _session(backend, job_id, workdir, spec, bars, times,
                                         deadline=deadline)
    if problem is None and outcome is not None and outcome.timed_out:
        problem = "not checked: the re-run sandbox reached the job's wall-clock limit"
    return answers, problem, outcome.stderr if outcome is not None else b""


def _session(backend: SandboxBackend, job_id: str, workdir: Path, spec: BacktestSpec,
             bars: pl.DataFrame, times: Sequence[int], *, deadline: float | None,
             ) -> tuple[list[Answer], SandboxOutcome | None, str | None]:
    """Start the prefix session, feed it, wait for it: ``(answers, outcome, problem)``."""
    start = getattr(backend, "start", None)
    if not callable(start):
        return [], None, (f"not checked: the {backend.name} sandbox backend has no live "
                          "sessions to feed prefixes to; use gvisor or docker")
    session: Any = start(runner_request(job_id, workdir, spec.limits))
    answers: list[Answer] = []
    problem: str | None = None
    try:
        answers = feed_prefixes(session.stdin, session.stdout, bars, times,
                                max_answer_bytes=spec.limits.output_mb * 2**20,
                                deadline=deadline)
    except EOFError:
        problem = "not checked: the re-run sandbox stopped answering"
    except StrategyOutputError as exc:
        session.kill()
        problem = f"the re-run sandbox broke the prefix protocol ({exc})"
    finally:
        with contextlib.suppress(OSError):
            session.stdin.close()
        outcome: SandboxOutcome = session.wait()
    return answers, outcome, problem


def _record(plan: CutPlan, verdict: LookaheadAudit, seconds: float) -> dict[str, Any]:
    """The manifest's ``audit``: the secret seed (disclosed after the run), the level and
    every cut with its families, so the platform can replay the audit exactly."""
    return {"seed": plan.seed, "level": plan.level, "seconds": round(seconds, 3),
            "status": verdict.status,
            "cuts": [{"at": c.at.isoformat(), "kinds": list(c.kinds)} for c in plan.cuts]}
