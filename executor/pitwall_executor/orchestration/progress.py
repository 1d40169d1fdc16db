"""An attempt's progress, recorded as it runs; a database outage skips updates, never fails
the attempt (the next update carries the state)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from pitwall.models import Metrics
from pitwall_executor.jobs.store import MetadataStore, database_unreachable
from pitwall_executor.orchestration.retry import first_line

log = logging.getLogger(__name__)


def progress_reporter(store: MetadataStore, job_id: str, attempt: int,
                      published: Callable[[], None]) -> Callable[..., None]:
    """``report(progress, message, equity=(), metrics=None)``: persist, then call
    ``published``."""
    skipped = 0

    def report(progress: float, message: str, equity: Sequence[tuple[int, float]] = (),
               metrics: Metrics | None = None) -> None:
        nonlocal skipped
        try:
            store.set_progress(job_id, attempt, progress, message, equity, metrics)
        except Exception as exc:
            if not database_unreachable(exc):
                raise
            if not skipped:
                log.warning("job %s: progress not recorded, the database is unreachable "
                            "(%s); the job runs on", job_id, first_line(exc))
            skipped += 1
            return
        if skipped:
            log.info("job %s: progress recorded again (%d updates skipped)", job_id, skipped)
            skipped = 0
        published()
    return report
