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

import numpy as np
import polars as pl

from pitwall.engine.audit import audit_weights
from pitwall.engine.audit_cuts import CutPlan, plan_cuts
from pitwall.errors import StrategyOutputError
from pitwall.models import BacktestSpec, LookaheadAudit
from pitwall_executor.execution.prefix_feed import Answer, Pacer, feed_prefixes
from pitwall_executor.sandbox import SandboxBackend, SandboxOutcome, runner_request

#: The least time the audit may take, whatever the main run took.
MIN_BUDGET_S = 2.0
#: Past its budget by this factor, the audit stops calling at all (a safety net: the
#: pacer's estimate is off only when the strategy's cost jumps).
HARD_STOP = 3.0


class BudgetPacer:
    """Keeps the audit within ``budget_s``: every structural cut is made; random cuts are
    made while the projected cost of the rest fits, else each is kept with the chance
    that makes it fit, drawn from the audit's secret random stream, so the cuts that are
    checked stay spread over the whole run instead of stopping early.

    Projection: a call's time is ``a + b·rows`` (its prefix's rows), fitted on the calls
    made so far.
    """

    def __init__(self, plan: CutPlan, budget_s: float | None) -> None:
        self.budget_s = budget_s
        self.required = {i for i, c in enumerate(plan.cuts) if set(c.kinds) - {"random"}}
        self.rng = np.random.default_rng(plan.seed ^ 0x5EED)
        self.spent = 0.0
        self.samples: list[tuple[int, float]] = []

    def _cost(self, rows: int) -> float:
        if not self.samples:
            return 0.0
        if len(self.samples) == 1:
            (r0, s0), = self.samples
            return s0 * max(rows, 1) / max(r0, 1)
        x = np.array([r for r, _ in self.samples], dtype=float)
        y = np.array([s for _, s in self.samples])
        b = float(np.polyfit(x, y, 1)[0]) if np.ptp(x) > 0 else 0.0
        b = max(b, 0.0)
        a = max(float(np.mean(y - b * x)), 0.0)
        return a + b * rows

    def keep(self, index: int, rows: Sequence[int]) -> bool:
        if self.budget_s is None or index in self.required or not self.samples:
            return True
        later = range(index, len(rows))
        need = sum(self._cost(rows[j]) for j in later if j in self.required)
        optional = sum(self._cost(rows[j]) for j in later if j not in self.required)
        room = self.budget_s - self.spent - need
        if optional <= room:
            return True
        return bool(self.rng.random() < max(room, 0.0) / optional)

    def observe(self, index: int, rows: int, seconds: float) -> None:
        self.spent += seconds
        self.samples.append((rows, seconds))


@dataclass(frozen=True)
class AuditRun:
    """The verdict and what the manifest records to reproduce it."""

    verdict: LookaheadAudit
    record: dict[str, Any]
    log: bytes = b""  # the re-run sandbox's stderr, for the job's log


def audit_vectorized(backend: SandboxBackend, job_id: str, workdir: Path, spec: BacktestSpec,
                     bars: pl.DataFrame, weights: pl.DataFrame, *,
                     main_seconds: float, budget_factor: float = 2.0) -> AuditRun:
    """Re-run the strategy at secret cuts in a fresh sandbox and compare with ``weights``
    (the full run's, validated). ``workdir`` holds the bundle and an input dir whose
    ``spec.json`` is :func:`prefix_spec` in ``audit`` mode, and nothing else. The audit
    takes about ``budget_factor`` times ``main_seconds`` (0: no limit)."""
    seed = secrets.randbits(63)
    plan = plan_cuts(bars, seed=seed, level=spec.audit_level)
    started = time.monotonic()
    budget = max(budget_factor * main_seconds, MIN_BUDGET_S) if budget_factor else None
    pacer = BudgetPacer(plan, budget)
    deadline = started + HARD_STOP * budget if budget is not None else None
    answers, problem, log = _answers(backend, f"{job_id}-audit", workdir, spec, bars,
                                     plan.times, deadline=deadline, pacer=pacer)
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
             bars: pl.DataFrame, times: Sequence[int], *, deadline: float | None,
             pacer: Pacer) -> tuple[list[Answer], str | None, bytes]:
    if not times:
        return [], None, b""
    answers, outcome, problem = _session(backend, job_id, workdir, spec, bars, times,
                                         deadline=deadline, pacer=pacer)
    if problem is None and outcome is not None and outcome.timed_out:
        problem = "not checked: the re-run sandbox reached the job's wall-clock limit"
    return answers, problem, outcome.stderr if outcome is not None else b""


def _session(backend: SandboxBackend, job_id: str, workdir: Path, spec: BacktestSpec,
             bars: pl.DataFrame, times: Sequence[int], *, deadline: float | None,
             pacer: Pacer | None = None,
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
                                deadline=deadline, pacer=pacer)
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
