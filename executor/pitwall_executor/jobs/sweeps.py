"""Parameter sweeps: one submission, a grid of parameters, one child job per point.

The parent is a job row of kind ``sweep`` that no worker ever runs; its state is an
aggregate of its children, updated in the transaction that ends each child:

- ``progress`` is the fraction of children in a terminal state;
- it turns RUNNING when its first child starts;
- when every child is terminal it ends: CANCELLED if every child was cancelled,
  COMPLETED if at least one child completed (the reason counts the others), FAILED
  otherwise (none completed; the reason quotes the first failure).

Children run at :data:`SWEEP_PRIORITY`, behind interactive runs. The functions that
touch the database run inside a transaction of
:class:`~pitwall_executor.jobs.store.MetadataStore`, which calls them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy.engine import Connection

from pitwall.errors import PitwallError
from pitwall.models import BacktestSpec, JobStatus, Metrics, ParamValue
from pitwall_executor.jobs import events
from pitwall_executor.jobs.errors import JobNotFoundError
from pitwall_executor.jobs.schema import job_metrics, jobs, utcnow

SWEEP_PRIORITY = 5
MAX_SWEEP_RUNS = 1000


class SweepError(PitwallError, ValueError):
    """The parameter grid of a sweep is not usable."""


class SweepRow(BaseModel):
    """One line of a sweep's results table: a child's parameters, status and metrics."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    params: dict[str, ParamValue]
    status: JobStatus
    reason: str | None = None
    metrics: Metrics | None = None


class WalkForwardFold(BaseModel):
    """One walk-forward step: the child chosen on the training window and how it did on
    the next window (Sharpe ratios annualised)."""

    model_config = ConfigDict(frozen=True)

    train_start: dt.date
    train_end: dt.date  # the last day of the training window
    test_start: dt.date
    test_end: dt.date  # the last day of the test window
    job_id: str
    params: dict[str, ParamValue]
    train_sharpe: float
    test_sharpe: float


class Overfitting(BaseModel):
    """How likely the sweep's best run is a fluke (docs/overfitting.md).

    ``dsr`` is the Deflated Sharpe Ratio of the best run given ``effective_trials``
    independent trials; ``pbo`` the Probability of Backtest Overfitting by CSCV over
    ``cscv_splits`` submatrices (None with too few days: ``problems`` says why);
    ``logits`` summarises CSCV's logits (min, 25%, median, 75%, max); ``walk_forward``
    the folds of choosing on one window and holding on the next. Sharpe ratios are
    annualised. ``overfit`` is True when the best run's Sharpe is not to be trusted: the
    DSR is under 0.95 or the PBO is 0.5 or more; ``verdict`` says which in one sentence.
    """

    model_config = ConfigDict(frozen=True)

    n_trials: int
    n_days: int
    mean_correlation: float
    effective_trials: float
    best_job_id: str
    best_params: dict[str, ParamValue]
    best_sharpe: float
    expected_max_sharpe: float
    dsr: float
    pbo: float | None = None
    cscv_splits: int | None = None
    logits: list[float] | None = None
    degradation_slope: float | None = None
    prob_oos_loss: float | None = None
    walk_forward: list[WalkForwardFold] | None = None
    oos_sharpe: float | None = None
    overfit: bool
    verdict: str
    problems: list[str] = []


def expand_grid(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in a stable order (the last key fastest).

    >>> expand_grid({"fast": [5, 10], "slow": [60]})
    [{'fast': 5, 'slow': 60}, {'fast': 10, 'slow': 60}]
    """
    if not grid:
        raise SweepError("the sweep grid is empty; give at least one parameter with values")
    for name, values in grid.items():
        if not name.isidentifier():
            raise SweepError(f"grid parameter {name!r} is not a valid Python identifier")
        if not isinstance(values, list) or not values:
            raise SweepError(f"grid parameter {name!r} needs a non-empty list of values")
    size = 1
    for values in grid.values():
        size *= len(values)
    if size > MAX_SWEEP_RUNS:
        raise SweepError(f"the grid makes {size} runs; the limit is {MAX_SWEEP_RUNS}: "
                         "split the sweep or use fewer values")
    names = list(grid)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]


def insert_sweep(conn: Connection, *, spec: BacktestSpec, researcher: str,
                 bundle_sha256: str, data_version: int | None,
                 grid: dict[str, list[Any]]) -> tuple[str, list[str]]:
    """Insert the parent and one PENDING child per grid point, in the caller's
    transaction (which also stores the bundle): ``(parent id, child ids)``."""
    points = expand_grid(grid)
    base = spec.model_dump()
    try:  # every child spec must be valid on its own
        children = [BacktestSpec.model_validate({**base, "params": {**spec.params, **p}})
                    for p in points]
    except ValidationError as exc:
        raise SweepError(f"a grid value is not a valid parameter: {exc.errors()[0]['msg']}; "
                         "use numbers, strings, booleans or lists of them") from exc
    parent_id, now = str(uuid.uuid4()), utcnow()
    ids = [str(uuid.uuid4()) for _ in children]
    common = {"researcher": researcher, "status": JobStatus.PENDING.value,
              "bundle_sha256": bundle_sha256, "data_version": data_version, "created_at": now}
    conn.execute(sa.insert(jobs).values(id=parent_id, kind="sweep", spec=spec.model_dump_json(),
                                        grid=json.dumps(grid), **common))
    conn.execute(sa.insert(jobs), [
        {"id": job_id, "kind": "run", "parent_id": parent_id, "priority": SWEEP_PRIORITY,
         "spec": child.model_dump_json(), **common}
        for job_id, child in zip(ids, children, strict=True)])
    events.append(conn, parent_id, "status", {"status": "PENDING", "runs": len(ids)})
    for job_id in ids:
        events.append(conn, job_id, "status", {"status": "PENDING", "parent_id": parent_id})
    return parent_id, ids


def parent_started(conn: Connection, parent_id: str, now: dt.datetime) -> None:
    """A child of ``parent_id`` started: a PENDING sweep turns RUNNING."""
    res = conn.execute(sa.update(jobs).where(jobs.c.id == parent_id,
                                             jobs.c.status == JobStatus.PENDING.value)
                       .values(status=JobStatus.RUNNING.value, started_at=now))
    if res.rowcount == 1:
        events.append(conn, parent_id, "status", {"status": "RUNNING"})


def settle_parent_of(conn: Connection, job_id: str) -> None:
    """Update the sweep a job belongs to (if any) after the job changed state."""
    parent = conn.execute(sa.select(jobs.c.parent_id).where(jobs.c.id == job_id)).scalar()
    if parent is not None:
        settle_parent(conn, parent)


def settle_parent(conn: Connection, parent_id: str) -> None:
    """Recompute a sweep's progress and, once every child is terminal, its final state."""
    # Lock the parent first: two children ending at once must not both see the other
    # one still running (READ COMMITTED re-reads after the lock is granted).
    parent = conn.execute(sa.select(jobs.c.status).where(jobs.c.id == parent_id)
                          .with_for_update()).scalar()
    if parent is None or JobStatus(parent).terminal:
        return
    rows = conn.execute(sa.select(jobs.c.status, jobs.c.reason)
                        .where(jobs.c.parent_id == parent_id)
                        .order_by(jobs.c.finished_at)).all()
    counts = Counter(JobStatus(r.status) for r in rows)
    total = len(rows)
    done = sum(n for s, n in counts.items() if s.terminal)
    if done < total:
        conn.execute(sa.update(jobs).where(jobs.c.id == parent_id).values(progress=done / total))
        events.append(conn, parent_id, "progress", {"progress": done / total,
                                                     "message": f"{done}/{total} runs finished"})
        return
    status, reason = _final(counts, total, rows)
    now = utcnow()
    if parent == JobStatus.PENDING.value and status is not JobStatus.CANCELLED:
        conn.execute(sa.update(jobs).where(jobs.c.id == parent_id)
                     .values(status=JobStatus.RUNNING.value, started_at=now))
    conn.execute(sa.update(jobs).where(jobs.c.id == parent_id)
                 .values(status=status.value, reason=reason, progress=1.0, finished_at=now))
    events.append(conn, parent_id, "status", {"status": status.value, "reason": reason})


def _final(counts: Counter[JobStatus], total: int, rows: Sequence[Any],
           ) -> tuple[JobStatus, str | None]:
    completed = counts[JobStatus.COMPLETED]
    if counts[JobStatus.CANCELLED] == total:
        return JobStatus.CANCELLED, "every run of the sweep was cancelled"
    others = ", ".join(f"{n} {s.value.lower()}" for s, n in sorted(counts.items())
                       if s is not JobStatus.COMPLETED and n)
    if completed:
        return JobStatus.COMPLETED, (f"{completed} of {total} runs completed ({others})"
                                     if completed < total else None)
    first = next((r.reason for r in rows if r.status != "CANCELLED" and r.reason), None)
    return JobStatus.FAILED, (f"none of the {total} runs completed ({others})"
                              + (f"; first failure: {first}" if first else ""))


def sweep_results(conn: Connection, parent_id: str) -> list[SweepRow]:
    """The results table of a sweep: one row per child, in grid order."""
    grid_json = conn.execute(sa.select(jobs.c.grid).where(
        jobs.c.id == parent_id, jobs.c.kind == "sweep")).scalar()
    if grid_json is None:
        raise JobNotFoundError(f"no sweep {parent_id!r}")
    rows = conn.execute(
        sa.select(jobs.c.id, jobs.c.spec, jobs.c.status, jobs.c.reason, job_metrics.c.metrics)
        .select_from(jobs.outerjoin(job_metrics, job_metrics.c.job_id == jobs.c.id))
        .where(jobs.c.parent_id == parent_id)).all()
    names = list(json.loads(grid_json))
    order = {json.dumps(p, sort_keys=True): i
             for i, p in enumerate(expand_grid(json.loads(grid_json)))}
    out = []
    for r in rows:
        params = json.loads(r.spec)["params"]
        point = {k: params.get(k) for k in names}
        out.append((order.get(json.dumps(point, sort_keys=True), len(order)), SweepRow(
            job_id=r.id, params=point, status=JobStatus(r.status), reason=r.reason,
            metrics=Metrics.model_validate_json(r.metrics) if r.metrics else None)))
    return [row for _, row in sorted(out, key=lambda t: t[0])]
