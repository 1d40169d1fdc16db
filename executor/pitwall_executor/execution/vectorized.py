"""A vectorized attempt (docs/architecture.md §2 steps 3–5): the whole slice at once.

The sandbox reads the job's bars from its read-only input dir and answers with target
weights for every bar (Arrow IPC), plus one answer per cut of the lookahead audit; the
trusted engine validates them, fills next-bar and accounts. The rest of the attempt is
the template's (:mod:`.attempt`).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from pitwall.engine.audit import audit_weights, choose_cuts, describe, split_run
from pitwall.engine.metrics import metrics_for_spec
from pitwall.engine.validate import validate_weights
from pitwall.engine.vectorized import EngineResult, run_vectorized
from pitwall.models import MAX_EQUITY_POINTS, BacktestSpec, EngineKind, LookaheadAudit
from pitwall_executor.execution.attempt import Accounted, Attempt, Staged
from pitwall_executor.sandbox import SandboxOutcome, runner_request
from pitwall_executor.sandbox.results import decode_weights

#: Share of the wall-clock limit the runner may use for the full run plus its re-runs.
AUDIT_TIME_SHARE = 0.6


class VectorizedAttempt(Attempt):
    """The sandbox decides every weight at once; the engine accounts them afterwards."""

    engine = EngineKind.VECTORIZED

    def runner_inputs(self, staged: Staged) -> tuple[dict[str, Any], pl.DataFrame | None]:
        """``spec.json`` with the audit's cuts, and the bars as a file."""
        spec = self.spec
        return {"entrypoint": staged.bundle.entrypoint, "params": spec.params,
                "seed": spec.seed, "audit": audit_plan(spec, staged.bars)}, staged.bars

    def execute(self, staged: Staged) -> SandboxOutcome:
        """One sandbox run: the full run, then the audit's re-runs, in the same process."""
        return self.stack.backend.run(runner_request(self.job.id, self.workdir, self.spec.limits))

    def account(self, staged: Staged, outcome: SandboxOutcome) -> Accounted:
        """Validate the untrusted weights, then fill and account them; the audit's verdict."""
        spec = self.spec
        self.progress(0.7, "strategy finished; accounting")
        clean, audit = decode_and_audit(staged.bars, outcome, spec)
        result = run_vectorized(staged.bars, clean, capital=spec.capital, costs=spec.costs,
                                execution=spec.execution)
        # A vectorized strategy decides every weight at once, so there is no running curve
        # to show while the sandbox runs: the equity exists only once the trusted engine has
        # accounted. It goes out now, thinned, before the metrics and the report.
        self.progress(0.8, "accounted; writing the report", accounted_equity(result))
        metrics = metrics_for_spec(result, staged.bars, spec)
        if audit is not None:
            metrics = metrics.model_copy(update={"lookahead": audit})
        flagged = (audit is not None and audit.status == "flagged"
                   and self.stack.config.audit_fail)
        return Accounted(result, metrics,
                         {"lookahead_audit": describe(audit) if audit is not None else "not run"},
                         failure=describe(audit) if flagged and audit is not None else None)


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


def accounted_equity(result: EngineResult) -> list[tuple[int, float]]:
    """The accounted equity curve as at most :data:`MAX_EQUITY_POINTS` ``(ts_ms, value)``
    points, evenly thinned, the last point kept."""
    frame = result.equity.select(pl.col("ts").dt.epoch("ms"), "equity")
    step = -(-frame.height // MAX_EQUITY_POINTS)
    if step > 1:
        frame = frame.reverse().gather_every(step).reverse()
    return [(int(ts), float(v)) for ts, v in frame.iter_rows()]
