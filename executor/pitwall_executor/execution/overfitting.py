"""The overfitting statistics of an ended sweep (docs/overfitting.md), for the API and CLI.

:func:`sweep_overfitting` reads the daily returns of every completed run of a sweep from
its recorded equity curve (through the artifact store, local or S3) and hands the
``days × runs`` matrix to :func:`assess`, which computes the Deflated Sharpe Ratio of
the best run, CSCV's Probability of Backtest Overfitting and a walk-forward, with the
trusted engine's :mod:`pitwall.engine.overfit`.
"""

from __future__ import annotations

import datetime as dt
import io
import threading
from collections.abc import Sequence

import numpy as np
import polars as pl

from pitwall.engine import overfit
from pitwall.engine.metrics import daily_returns, trading_days
from pitwall.engine.vectorized import EngineResult
from pitwall.models import JobStatus, JobView
from pitwall_executor.jobs.sweeps import Overfitting, SweepRow, WalkForwardFold
from pitwall_executor.stack import Stack
from pitwall_executor.storage.artifacts import ArtifactError, read_artifact

EQUITY = "equity.parquet"
#: Fewest days for a walk-forward: three training windows' worth of 5 days.
MIN_WALK_DAYS = 15
#: Ended sweeps' results, by (sweep id, finish time): they never change once ended.
_CACHE: dict[tuple[str, dt.datetime], tuple[Overfitting | None, str | None]] = {}
_CACHE_SIZE = 64
_LOCK = threading.Lock()


def sweep_overfitting(stack: Stack, view: JobView, rows: Sequence[SweepRow],
                      ) -> tuple[Overfitting | None, str | None]:
    """The :class:`Overfitting` of the sweep ``view`` with its results ``rows``, or None and
    a sentence saying why it is not there (still running, fewer than 2 completed runs, an
    unreadable equity curve)."""
    if not view.status.terminal or view.finished_at is None:
        done = sum(r.status.terminal for r in rows)
        return None, (f"overfitting statistics come when the sweep has ended ({done}/"
                      f"{len(rows)} runs finished)")
    key = (view.id, view.finished_at)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    answer = _compute(stack, rows, view.spec.capital)
    with _LOCK:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = answer
    return answer


def _compute(stack: Stack, rows: Sequence[SweepRow], capital: float,
             ) -> tuple[Overfitting | None, str | None]:
    completed = [r for r in rows if r.status is JobStatus.COMPLETED]
    if len(completed) < 2:
        return None, (f"overfitting statistics need at least 2 completed runs; this sweep "
                      f"has {len(completed)} of {len(rows)}: fix the failed runs and sweep "
                      "again")
    try:
        series = [_returns(stack, r.job_id, capital) for r in completed]
    except ArtifactError as exc:
        return None, f"cannot read a run's equity curve for the overfitting statistics: {exc}"
    days, matrix = align(series)
    if len(days) < 3:
        return None, (f"the runs share {len(days)} trading days; the overfitting statistics "
                      "need at least 3 (sweep over a longer period)")
    try:
        return assess(matrix, days, completed), None
    except overfit.OverfitInputError as exc:  # never a 500 on the results table for it
        return None, f"the overfitting statistics cannot be computed: {exc}"


def _returns(stack: Stack, job_id: str, capital: float) -> pl.DataFrame:
    """One run's daily returns as ``day, r``, from its recorded equity curve."""
    rows = stack.store.artifacts(job_id)
    if EQUITY not in rows:
        raise ArtifactError(f"run {job_id} completed without an {EQUITY}; rerun it")
    data = read_artifact(rows[EQUITY]["uri"], stack.config, sha256=rows[EQUITY]["sha256"])
    equity = pl.read_parquet(io.BytesIO(data), columns=["ts", "equity"])
    result = EngineResult(equity=equity, capital=capital, n_trades=0, total_cost=0.0)
    return pl.DataFrame({"day": trading_days(result), "r": daily_returns(result)})


def align(series: Sequence[pl.DataFrame]) -> tuple[list[dt.date], np.ndarray]:
    """The days every run traded, in order, and the ``days × runs`` matrix of returns."""
    common = set(series[0].get_column("day").to_list())
    for s in series[1:]:
        common &= set(s.get_column("day").to_list())
    days = sorted(common)
    frame = pl.DataFrame({"day": days}, schema={"day": pl.Date})
    columns = [frame.join(s, on="day", how="left").get_column("r").to_numpy() for s in series]
    return days, np.column_stack(columns) if columns else np.empty((len(days), 0))


def assess(matrix: np.ndarray, days: Sequence[dt.date], runs: Sequence[SweepRow],
           ) -> Overfitting:
    """DSR, PBO (CSCV) and a walk-forward of the ``days × runs`` returns, with a verdict.

    CSCV takes the most submatrices (even, ≤ 16) of at least 5 days each; the walk-forward
    trains on a third of the days and tests on the next sixth, rolling by a sixth.
    """
    t = matrix.shape[0]
    deflated = overfit.deflated_sharpe(matrix)
    problems: list[str] = []
    cscv = None
    splits = overfit.cscv_splits(t)
    if splits:
        cscv = overfit.pbo(matrix, splits=splits)
    else:
        problems.append(f"PBO needs at least {4 * overfit.MIN_BLOCK_DAYS} trading days (4 "
                        f"submatrices of {overfit.MIN_BLOCK_DAYS}); the runs have {t}: sweep "
                        "over a longer period")
    folds, oos = None, None
    if t >= MIN_WALK_DAYS:
        walk = overfit.walk_forward(matrix, train=t // 3, test=max(t // 6, 2))
        folds = [_fold(f, days, runs) for f in walk.folds]
        oos = overfit.annualise(walk.oos_sharpe)
    else:
        problems.append(f"the walk-forward needs at least {MIN_WALK_DAYS} trading days; the "
                        f"runs have {t}: sweep over a longer period")
    best = runs[deflated.best]
    flagged = deflated.dsr < overfit.DSR_SIGNIFICANT or (
        cscv is not None and cscv.pbo >= overfit.PBO_OVERFIT)
    return Overfitting(
        n_trials=deflated.n_trials, n_days=t, mean_correlation=deflated.mean_correlation,
        effective_trials=deflated.effective_trials, best_job_id=best.job_id,
        best_params=best.params, best_sharpe=overfit.annualise(deflated.sharpe),
        expected_max_sharpe=overfit.annualise(deflated.expected_max), dsr=deflated.dsr,
        pbo=cscv.pbo if cscv else None, cscv_splits=splits or None,
        logits=[float(q) for q in np.quantile(cscv.logits, [0, 0.25, 0.5, 0.75, 1])]
        if cscv else None,
        degradation_slope=cscv.degradation_slope if cscv else None,
        prob_oos_loss=cscv.prob_oos_loss if cscv else None,
        walk_forward=folds, oos_sharpe=oos, overfit=flagged,
        verdict=verdict(deflated, cscv, oos), problems=problems)


def _fold(fold: overfit.Fold, days: Sequence[dt.date], runs: Sequence[SweepRow],
          ) -> WalkForwardFold:
    pick = runs[fold.pick]
    return WalkForwardFold(train_start=days[fold.train_start],
                           train_end=days[fold.test_start - 1], test_start=days[fold.test_start],
                           test_end=days[fold.test_end - 1], job_id=pick.job_id,
                           params=pick.params,
                           train_sharpe=overfit.annualise(fold.train_sharpe),
                           test_sharpe=overfit.annualise(fold.test_sharpe))


def verdict(deflated: overfit.Deflated, cscv: overfit.Pbo | None, oos: float | None) -> str:
    """One sentence: overfit or not, and the figures that say so."""
    parts = [f"DSR {deflated.dsr:.2f} for the best Sharpe "
             f"{overfit.annualise(deflated.sharpe):.2f} after "
             f"{deflated.effective_trials:.1f} effective trials (skill needs 0.95)"]
    if cscv is not None:
        parts.insert(0, f"PBO {cscv.pbo:.2f}")
    if oos is not None:
        parts.append(f"walk-forward out-of-sample Sharpe {oos:.2f}")
    figures = ", ".join(parts)
    significant = deflated.dsr >= overfit.DSR_SIGNIFICANT
    holds = cscv is not None and cscv.pbo < overfit.PBO_OVERFIT
    if significant and (cscv is None or holds):
        return f"no sign of overfitting: {figures}"
    if significant:
        return (f"the best run's edge survives deflation but the choice of its parameters "
                f"does not hold out of sample: {figures}")
    if holds:
        return (f"not proven: the in-sample choice holds out of sample but the best Sharpe "
                f"is within what luck gives over this many trials and days: {figures}")
    return f"likely overfit: {figures}"
