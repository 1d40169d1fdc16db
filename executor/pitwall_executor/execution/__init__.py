"""Running one attempt of a job (docs/architecture.md §2 steps 1–6).

:func:`run_attempt` picks the engine the job's spec names; every engine is the template
of :mod:`.attempt` with its own execute step (:mod:`.vectorized`, :mod:`.event`).
"""

from __future__ import annotations

from pitwall.models import EngineKind
from pitwall_executor.execution.attempt import Attempt, AttemptResult, Outage, Progress
from pitwall_executor.execution.event import EventAttempt
from pitwall_executor.execution.vectorized import VectorizedAttempt
from pitwall_executor.stack import Stack

__all__ = ["ENGINES", "Attempt", "AttemptResult", "EventAttempt", "Outage",
           "VectorizedAttempt", "run_attempt"]

#: The attempt class of each engine kind.
ENGINES: dict[EngineKind, type[Attempt]] = {
    EngineKind.VECTORIZED: VectorizedAttempt,
    EngineKind.EVENT: EventAttempt,
}


def run_attempt(stack: Stack, job_id: str, attempt: int,
                on_progress: Progress | None = None) -> AttemptResult:
    """Run one attempt of a job with its engine; never raises for a strategy's or the
    platform's fault (an infrastructure failure comes back as ``result.outage``)."""
    job = stack.store.get(job_id)
    return ENGINES[job.spec.engine](stack, job, attempt, on_progress).process()
