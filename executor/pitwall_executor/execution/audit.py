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
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pitwall.engine.audit import COMPARE_WINDOW, audit_weights
from pitwall.engine.audit_cuts import CutPlan, plan_cuts
from pitwall.errors import StrategyOutputError
from pitwall.models import BacktestSpec, LookaheadAudit
from pitwall_executor.execution.prefix_feed import Answer, Pacer, feed_prefixes
from pitwall_executor.sandbox import SandboxBackend, SandboxOutcome, runner_request

#: A safety net in time, whatever the rows: past this many times the main run's wall
#: time (at least HARD_STOP_MIN_S), the audit stops calling and says so.
HARD_STOP = 10.0
HARD_STOP_MIN_S = 30.0


class BudgetPacer:
    """Keeps the audit within ``budget_rows`` bars fed to the strategy in all (the cost of
    a call grows with its prefix): every structural cut is made; a random cut is made while
    the rows of the rest fit, else with the chance that makes them fit, drawn from the
    audit's own seeded stream. Rows, not seconds, so the same run thins the same way and a
    rerun reproduces its verdict; the cuts kept stay spread over the whole run."""

    def __init__(self, plan: CutPlan, budget_rows: int | None) -> None:
        self.budget_rows = budget_rows
        self.required = {i for i, c in enumerate(plan.cuts) if set(c.kinds) - {"random"}}
        self.rng = np.random.default_rng(plan.seed ^ 0x5EED)
        self.spent = 0  # rows fed in the calls made
        self.seconds = 0.0

    def keep(self, index: int, rows: Sequence[int]) -> bool:
        if self.budget_rows is None or index in self.required:
            return True
        later = range(index, len(rows))
        need = sum(rows[j] for j in later if j in self.required)
        optional = sum(rows[j] for j in later if j not in self.required)
        room = self.budget_rows - self.spent - need
        if optional <= room:
            return True
        return bool(self.rng.random() < max(room, 0) / optional)

    def observe(self, index: int, rows: int, seconds: float) -> None:
        self.spent += rows
        self.seconds += seconds


@dataclass(frozen=True)
class AuditRun:
    """The verdict and what the manifest records to reproduce it."""

    verdict: LookaheadAudit
    record: dict[str, Any]
    log: bytes = b""  # the re-run sandbox's stderr, for the job's log


#: The data-dir secret the audit's seeds are keyed with (pitwall_executor.keys).
SEED_SECRET = "audit-secret"

#: The timestamps of weights an audit re-run sends back: the compared window (None: the
#: whole prefix's, as before the window; bench/audit.py times both).
ANSWER_WINDOW: int | None = COMPARE_WINDOW


def audit_id(job_id: str) -> str:
    """The id of a job's audit sandbox (its sandbox request, its container's name)."""
    return f"{job_id}-audit"


def audit_seed(secret: bytes, bundle_sha256: str, spec: BacktestSpec) -> int:
    """The audit's secret seed of a run: HMAC of the deployment's secret over what the
    run is (bundle, spec with its parameters, data digest). The same run draws the same
    cuts, so a rerun reproduces its verdict bit for bit; a strategy cannot compute them
    (it lacks the secret), and any change to its code, parameters or data draws new ones.
    The seed is disclosed in the manifest after the run."""
    message = f"{bundle_sha256}|{spec.model_dump_json()}".encode()
    return int.from_bytes(hmac.new(secret, message, hashlib.sha256).digest()[:8], "big") >> 1


def audit_vectorized(backend: SandboxBackend, job_id: str, workdir: Path, spec: BacktestSpec,
                     bars: pl.DataFrame, weights: pl.DataFrame, *, seed: int,
                     main_seconds: float, budget_calls: float = 8.0,
                     session: Any = None) -> AuditRun:
    """Re-run the strategy at secret cuts in a fresh sandbox and compare with ``weights``
    (the full run's, validated). ``workdir`` holds the bundle and an input dir whose
    ``spec.json`` is :func:`prefix_spec` in ``audit`` mode, and nothing else. The audit
    feeds the strategy at most ``budget_calls`` times the run's bars in all (0: no
    limit), as many full-data calls' worth. ``session``: the audit's sandbox when it was
    started already (over ``workdir``), else it is started here."""
    plan = plan_cuts(bars, seed=seed, level=spec.audit_level)
    started = time.monotonic()
    pacer = BudgetPacer(plan, int(budget_calls * bars.height) if budget_calls else None)
    deadline = (started + max(HARD_STOP * main_seconds, HARD_STOP_MIN_S)
                if budget_calls else None)

    def judge(answers: list[Answer], problem: str | None) -> LookaheadAudit:
        if problem is not None:
            answers = [problem] * len(plan.cuts)
        verdict = audit_weights(bars, weights, plan, answers, spec.universe)
        if problem is not None and "protocol" in problem:
            verdict = verdict.model_copy(update={
                "status": "flagged", "notes": [*verdict.notes, problem],
                "statement": f"lookahead audit flagged: {problem}"})
        return verdict

    log = b""
    if not plan.times:
        if session is not None:
            session.kill()
            session.wait()
        verdict = judge([], None)
    else:
        # The comparison runs while the sandbox shuts down.
        _, outcome, problem, judged = _session(
            backend, audit_id(job_id), workdir, spec, bars, plan.times, deadline=deadline,
            pacer=pacer, session=session, judge=judge)
        assert judged is not None  # judge was given
        verdict = judged
        if outcome is not None:
            log = outcome.stderr
            if problem is None and outcome.timed_out:
                verdict = judge([], "not checked: the re-run sandbox reached the job's "
                                    "wall-clock limit")
    return AuditRun(verdict, _record(plan, verdict, time.monotonic() - started), log)


def prefix_spec(mode: str, entrypoint: str, spec: BacktestSpec) -> dict[str, Any]:
    """The ``spec.json`` of a prefix session (``audit`` or ``stepped``): what the runner
    needs to load and call the strategy, and nothing about when it will be called. An
    audit session answers with the compared window only (``ANSWER_WINDOW``)."""
    return {"kind": "prefixes", "mode": mode, "entrypoint": entrypoint, "params": spec.params,
            "seed": spec.seed, "window": ANSWER_WINDOW if mode != "stepped" else None}


def stepped_answers(backend: SandboxBackend, job_id: str, workdir: Path, spec: BacktestSpec,
                    bars: pl.DataFrame, times: Sequence[int],
                    ) -> tuple[list[Answer], SandboxOutcome | None, str | None]:
    """A stepped run: one process answers at every decision time on the prefix so far
    (``workdir``'s spec.json is :func:`prefix_spec` in ``stepped`` mode)."""
    answers, outcome, problem, _ = _session(backend, job_id, workdir, spec, bars, times,
                                            deadline=None)
    return answers, outcome, problem


def _session(backend: SandboxBackend, job_id: str, workdir: Path, spec: BacktestSpec,
             bars: pl.DataFrame, times: Sequence[int], *, deadline: float | None,
             pacer: Pacer | None = None, session: Any = None,
             judge: Callable[[list[Answer], str | None], LookaheadAudit] | None = None,
             ) -> tuple[list[Answer], SandboxOutcome | None, str | None,
                        LookaheadAudit | None]:
    """Start the prefix session (unless given one), feed it, ``judge`` the answers while
    it ends, wait for it: ``(answers, outcome, problem, judged)``."""
    if session is None:
        start = getattr(backend, "start", None)
        if not callable(start):
            missing = (f"not checked: the {backend.name} sandbox backend has no live "
                       "sessions to feed prefixes to; use gvisor or docker")
            return [], None, missing, judge([], missing) if judge is not None else None
        session = start(runner_request(job_id, workdir, spec.limits))
    answers: list[Answer] = []
    problem: str | None = None
    judged: LookaheadAudit | None = None
    try:
        try:
            answers = feed_prefixes(session.stdin, session.stdout, bars, times,
                                    max_answer_bytes=spec.limits.output_mb * 2**20,
                                    deadline=deadline, pacer=pacer)
        except EOFError:
            problem = "not checked: the re-run sandbox stopped answering"
        except StrategyOutputError as exc:
            session.kill()
            problem = f"the re-run sandbox broke the prefix protocol ({exc})"
        with contextlib.suppress(OSError):
            session.stdin.close()
        if judge is not None:
            judged = judge(answers, problem)
    finally:
        with contextlib.suppress(OSError):
            session.stdin.close()
        outcome: SandboxOutcome = session.wait()
    return answers, outcome, problem, judged


def _record(plan: CutPlan, verdict: LookaheadAudit, seconds: float) -> dict[str, Any]:
    """The manifest's ``audit``: the secret seed (disclosed after the run), the level and
    every cut with its families, so the platform can replay the audit exactly."""
    return {"seed": plan.seed, "level": plan.level, "seconds": round(seconds, 3),
            "status": verdict.status,
            "cuts": [{"at": c.at.isoformat(), "kinds": list(c.kinds)} for c in plan.cuts]}
