"""Wire models shared by the SDK, the executor and the server extension (DESIGN.md §4).

One source of truth: the API validates with these, the worker reads them, and the
TypeScript types of the labextension are generated from their JSON Schema.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

JsonScalar = str | int | float | bool | None
ParamValue = JsonScalar | list[JsonScalar]


class JobStatus(StrEnum):
    """Lifecycle of a job: ``PENDING → RUNNING → COMPLETED | FAILED | CANCELLED | TIMED_OUT``."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"

    @property
    def terminal(self) -> bool:
        return self not in (JobStatus.PENDING, JobStatus.RUNNING)


class EngineKind(StrEnum):
    """How the strategy decides: a whole frame at once, or bar by bar."""

    VECTORIZED = "vectorized"
    EVENT = "event"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Costs(_Model):
    """Trading costs applied by the trusted engine to every traded notional."""

    commission_bps: Annotated[float, Field(ge=0, le=1000)] = 0.0
    slippage_bps: Annotated[float, Field(ge=0, le=1000)] = 0.0


class Limits(_Model):
    """Resource limits of the sandbox that runs the strategy."""

    timeout_s: Annotated[float, Field(gt=0, le=24 * 3600)] = 600.0
    memory_mb: Annotated[int, Field(ge=64, le=64 * 1024)] = 2048
    pids: Annotated[int, Field(ge=8, le=4096)] = 128
    cpus: Annotated[float, Field(gt=0, le=64)] = 1.0
    scratch_mb: Annotated[int, Field(ge=1, le=16 * 1024)] = 256
    output_mb: Annotated[int, Field(ge=1, le=4096)] = 256
    log_kb: Annotated[int, Field(ge=1, le=64 * 1024)] = 1024


class BacktestSpec(_Model):
    """What to run: the data slice, the engine, capital, costs, parameters and limits."""

    dataset: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]
    version: Annotated[int, Field(ge=0)] | None = None
    universe: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=32)]],
        Field(min_length=1, max_length=10_000),
    ]
    start: dt.date
    end: dt.date
    bar_size: str = "1min"
    engine: EngineKind = EngineKind.VECTORIZED
    capital: Annotated[float, Field(gt=0, le=1e15)] = 1_000_000.0
    costs: Costs = Costs()
    params: dict[str, ParamValue] = Field(default_factory=dict)
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    limits: Limits = Limits()

    @model_validator(mode="after")
    def _check(self) -> BacktestSpec:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}; swap them")
        if len(set(self.universe)) != len(self.universe):
            raise ValueError("universe lists a symbol twice; list each symbol once")
        if self.bar_size != "1min":
            raise ValueError(f"bar_size {self.bar_size!r} is not available; use '1min'")
        return self


class Metrics(_Model):
    """Performance figures of the trusted engine (conventions: docs/engine-conventions.md)."""

    total_return: float
    cagr: float
    annual_volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float
    turnover: float
    exposure: float
    n_days: int
    n_bars: int
    final_equity: float


class JobView(_Model):
    """A job as the API and the CLI show it."""

    id: str
    status: JobStatus
    spec: BacktestSpec
    researcher: str
    attempt: int
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    reason: str | None = None
    progress: float = 0.0
    metrics: Metrics | None = None
    bundle_sha256: str
    data_version: int | None = None


class ProgressEvent(_Model):
    """One event of a job's stream: a status change, progress, or a log line."""

    job_id: str
    seq: int
    kind: str
    at: dt.datetime
    status: JobStatus | None = None
    progress: float | None = None
    message: str | None = None
    data: dict[str, Any] | None = None
