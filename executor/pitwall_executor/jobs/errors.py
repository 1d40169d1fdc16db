"""The errors the metadata store raises (each also importable from ``jobs.store``)."""

from __future__ import annotations


class JobNotFoundError(LookupError):
    """No job has this id."""


class ResearcherAtQuotaError(RuntimeError):
    """The job's researcher already has their quota of sweep runs running."""

    def __init__(self, researcher: str, limit: int) -> None:
        super().__init__(f"researcher {researcher!r} already has {limit} sweep runs running "
                         "(max_running_per_researcher); the run waits for one to end")
        self.researcher = researcher
        self.limit = limit
