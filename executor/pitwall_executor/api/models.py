"""Wire models of the Backtest API that are not shared with the SDK (verb-noun names)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from pitwall.models import JobStatus, JobView
from pitwall_executor.jobs.sweeps import Overfitting, SweepRow


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CreateBacktestResponse(_Model):
    """A submission was accepted and queued."""

    id: str
    status: JobStatus


class ListBacktestsResponse(_Model):
    """One page of jobs, newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    items: list[JobView]
    next_cursor: str | None = None


class CreateSweepResponse(_Model):
    """A sweep was accepted: its id (the parent job) and one queued child per grid point."""

    id: str
    status: JobStatus
    children: list[str]


class SweepResultsResponse(_Model):
    """A sweep (its aggregate status and progress) and its results table, in grid order.

    ``overfitting`` says how likely the best run is a fluke (docs/overfitting.md); it is
    null until the sweep has ended with at least 2 completed runs, and ``overfitting_note``
    then says why.
    """

    sweep: JobView
    rows: list[SweepRow]
    overfitting: Overfitting | None = None
    overfitting_note: str | None = None


class FieldError(_Model):
    """What is wrong with one field of the request."""

    field: str
    message: str


class ErrorResponse(_Model):
    """Every error the API returns: a code, a sentence saying what to do, and field errors."""

    error: str
    message: str
    fields: list[FieldError] = []


class HealthResponse(_Model):
    """Liveness of the API, reachability of the metadata database, and the state of each
    worker loop of the process (embedded mode: ``up`` or ``retrying``; empty otherwise)."""

    status: str
    database: str
    loops: dict[str, str] = {}
