"""The verdict of a sweep's overfitting statistics (execution/overfitting.py,
docs/overfitting.md): each of its four sentences, from returns built to produce it."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from pitwall.models import JobStatus
from pitwall_executor.execution.overfitting import align, assess
from pitwall_executor.jobs.sweeps import SweepRow


def _runs(n: int) -> list[SweepRow]:
    return [SweepRow(job_id=f"run-{i}", params={"p": i}, status=JobStatus.COMPLETED)
            for i in range(n)]


def _days(t: int) -> list[dt.date]:
    return [dt.date(2022, 1, 3) + dt.timedelta(i) for i in range(t)]


def test_a_short_sweep_with_a_stable_winner_is_not_proven() -> None:
    """40 days: the in-sample best stays best out of sample (PBO low), but 40 days of a
    Sharpe are within luck (DSR < 0.95): flagged, and the sentence says why."""
    returns = np.random.default_rng(11).normal(0.0, 0.01, size=(40, 4))
    returns[:, 1] += 0.004
    result = assess(returns, _days(40), _runs(4))
    assert result.pbo is not None and result.pbo < 0.5 and result.dsr < 0.95
    assert result.overfit and result.verdict.startswith("not proven: ")
    assert result.best_job_id == "run-1" and result.best_params == {"p": 1}


def test_two_good_runs_that_take_turns_survive_deflation_but_not_the_choice() -> None:
    """Both runs earn 0.3% a day; each earns 0.4% more on alternate sixteenths of the
    period. Whichever wins a training half has its good blocks there and the other's in
    the test half: the strategy is real (DSR 1), choosing between them is not (PBO > 0.5)."""
    t = 512
    returns = np.random.default_rng(13).normal(0.003, 0.005, size=(t, 2))
    block = (np.arange(t) // (t // 16)) % 2
    returns[block == 0, 0] += 0.004
    returns[block == 1, 1] += 0.004
    result = assess(returns, _days(t), _runs(2))
    assert result.dsr > 0.95 and result.pbo is not None and result.pbo > 0.5
    assert result.overfit
    assert result.verdict.startswith("the best run's edge survives deflation but the choice")
    assert [f.test_end for f in result.walk_forward or []][-1] == _days(t)[-1]


def test_runs_are_aligned_on_the_days_they_all_have() -> None:
    a = pl.DataFrame({"day": _days(4), "r": [0.01, 0.02, 0.03, 0.04]})
    b = pl.DataFrame({"day": _days(5)[1:], "r": [0.2, 0.3, 0.4, 0.5]})
    days, matrix = align([a, b])
    assert days == _days(4)[1:]
    assert matrix.tolist() == [[0.02, 0.2], [0.03, 0.3], [0.04, 0.4]]
