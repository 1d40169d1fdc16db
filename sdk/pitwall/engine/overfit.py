"""Overfitting statistics of a parameter sweep (docs/overfitting.md).

A sweep that reports its best Sharpe as if it were one trial invites overfitting. These
functions take the sweep's daily returns as a ``T × N`` matrix (one column per trial)
and say how likely the winner is a fluke:

- :func:`deflated_sharpe`: the Deflated Sharpe Ratio of the best trial (Bailey & López
  de Prado, "The Deflated Sharpe Ratio", 2014): the probability that its true Sharpe
  beats the best one ``N`` trials of no skill would show, given skewness, kurtosis and
  track length; ``N`` is the *effective* number of trials (:func:`effective_trials`);
- :func:`pbo`: the Probability of Backtest Overfitting by combinatorially symmetric
  cross-validation (Bailey, Borwein, López de Prado & Zhu, 2017);
- :func:`walk_forward`: choose on a training window, report on the next, roll.

Everything is deterministic (no sampling) and needs only NumPy and the standard library.
Sharpe ratios here are *per period* (daily, not annualised);
:func:`annualise` multiplies by √:data:`~pitwall.engine.metrics.TRADING_DAYS`, as
:func:`pitwall.engine.metrics.sharpe` does.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from pitwall.engine.metrics import TRADING_DAYS

Matrix = npt.NDArray[np.float64]
Vector = npt.NDArray[np.float64]

_NORMAL = NormalDist()
#: Euler–Mascheroni constant, in the expected maximum of N normal draws.
EULER_GAMMA = 0.5772156649015329
#: The DSR below which the best Sharpe is not evidence of skill (a 5% test).
DSR_SIGNIFICANT = 0.95
#: The PBO at and above which choosing the best in-sample is no better than chance.
PBO_OVERFIT = 0.5
#: CSCV's number of submatrices by default (the paper's choice: C(16, 8) = 12,870 splits).
DEFAULT_SPLITS = 16
#: Fewest days in one CSCV submatrix: a Sharpe over fewer says nothing.
MIN_BLOCK_DAYS = 5
#: Splits × trials held at once while scoring CSCV's splits (16 MB a matrix).
_CHUNK_CELLS = 2_000_000


class OverfitInputError(ValueError):
    """The returns cannot support the statistic asked for (too few days or trials)."""


def sharpe_ratios(returns: Matrix) -> Vector:
    """Per-period Sharpe ratio of each column (mean / sample std, ddof=1); 0 where a column
    is constant, as :func:`pitwall.engine.metrics.sharpe` does."""
    matrix = _matrix(returns)
    if matrix.shape[0] < 2:
        return np.zeros(matrix.shape[1])
    std = matrix.std(axis=0, ddof=1)
    constant = matrix.max(axis=0) == matrix.min(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(constant, 0.0, matrix.mean(axis=0) / np.where(constant, 1.0, std))
    return np.asarray(ratio, dtype=np.float64)


def annualise(sharpe: float, periods_per_year: int = TRADING_DAYS) -> float:
    """A per-period Sharpe ratio × √periods_per_year."""
    return sharpe * math.sqrt(periods_per_year)


def probabilistic_sharpe(sharpe: float, benchmark: float, n_obs: int, *, skew: float = 0.0,
                         kurtosis: float = 3.0) -> float:
    """PSR: the probability that the true Sharpe exceeds ``benchmark`` (both per period),
    given ``n_obs`` returns with this skewness and (non-excess) kurtosis.

    ``Φ((SR − SR*) √(T − 1) / √(1 − γ₃ SR + (γ₄ − 1)/4 SR²))`` (Bailey & López de Prado
    2012, eq. used by the DSR paper). A variance term ≤ 0 (possible for extreme moments)
    is floored so the answer stays a probability.

    >>> round(probabilistic_sharpe(0.1, 0.0, 253), 4)
    0.9433
    """
    if n_obs < 2:
        raise OverfitInputError(f"the PSR needs at least 2 returns, got {n_obs}")
    variance = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    z = (sharpe - benchmark) * math.sqrt(n_obs - 1) / math.sqrt(max(variance, 1e-12))
    return _NORMAL.cdf(z)


def expected_max_sharpe(n_trials: float, variance: float) -> float:
    """E[max SR] of ``n_trials`` independent trials of no skill whose Sharpe estimates have
    this variance (DSR paper, the False Strategy theorem):

    ``√V · ((1 − γ) Φ⁻¹(1 − 1/N) + γ Φ⁻¹(1 − 1/(N e)))``, γ the Euler–Mascheroni constant.
    0 for one trial or fewer (nothing was selected).
    """
    if variance < 0:
        raise OverfitInputError(f"the variance of the trials' Sharpe ratios is {variance} < 0")
    if n_trials <= 1:
        return 0.0
    z = ((1 - EULER_GAMMA) * _NORMAL.inv_cdf(1 - 1 / n_trials)
         + EULER_GAMMA * _NORMAL.inv_cdf(1 - 1 / (n_trials * math.e)))
    return float(math.sqrt(variance) * z)


def mean_correlation(returns: Matrix) -> float:
    """The average pairwise correlation of the columns, clipped to [0, 1]; a constant column
    counts as uncorrelated with every other (its correlation is undefined)."""
    matrix = _matrix(returns)
    n = matrix.shape[1]
    if n < 2 or matrix.shape[0] < 2:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.corrcoef(matrix, rowvar=False)
    corr = np.nan_to_num(corr, nan=0.0)
    off = (corr.sum() - np.trace(corr)) / (n * (n - 1))
    return float(min(max(off, 0.0), 1.0))


def effective_trials(n_trials: int, correlation: float) -> float:
    """The number of independent trials that ``n_trials`` with this average correlation are
    worth: ``ρ + (1 − ρ) N`` (N when independent, 1 when all the same).

    The DSR paper leaves the estimate of independent trials open (it suggests clustering);
    this is the average-correlation estimate, documented in docs/overfitting.md.
    """
    rho = min(max(correlation, 0.0), 1.0)
    return rho + (1.0 - rho) * n_trials


@dataclass(frozen=True)
class Deflated:
    """The Deflated Sharpe Ratio of the best trial and what it was computed from."""

    best: int  #: column of the best Sharpe
    sharpe: float  #: its per-period Sharpe
    n_trials: int
    effective_trials: float
    mean_correlation: float
    sharpe_variance: float  #: variance across trials of the per-period Sharpe (ddof=1)
    expected_max: float  #: per-period E[max SR] under no skill, the DSR's benchmark
    skew: float
    kurtosis: float  #: non-excess (3 for normal returns)
    n_obs: int
    dsr: float


def deflated_sharpe(returns: Matrix) -> Deflated:
    """The DSR of the column with the best Sharpe ratio among all columns of ``returns``.

    The benchmark is :func:`expected_max_sharpe` for the :func:`effective_trials` of the
    columns' :func:`mean_correlation` and the variance of their Sharpe ratios; the PSR
    uses the best column's own skewness and kurtosis.
    """
    matrix = _matrix(returns)
    t, n = matrix.shape
    if t < 3:
        raise OverfitInputError(f"the DSR needs at least 3 days of returns, got {t}")
    ratios = sharpe_ratios(matrix)
    best = int(np.argmax(ratios))
    rho = mean_correlation(matrix)
    n_eff = effective_trials(n, rho)
    variance = float(np.var(ratios, ddof=1)) if n > 1 else 0.0
    benchmark = expected_max_sharpe(n_eff, variance)
    skew, kurt = _moments(matrix[:, best])
    dsr = probabilistic_sharpe(float(ratios[best]), benchmark, t, skew=skew, kurtosis=kurt)
    return Deflated(best=best, sharpe=float(ratios[best]), n_trials=n, effective_trials=n_eff,
                    mean_correlation=rho, sharpe_variance=variance, expected_max=benchmark,
                    skew=skew, kurtosis=kurt, n_obs=t, dsr=dsr)


def _moments(column: Vector) -> tuple[float, float]:
    """Sample skewness and non-excess kurtosis (population moments, as the DSR paper and
    ``scipy.stats.skew``/``kurtosis(fisher=False)``); a normal's (0, 3) for a constant
    column."""
    if column.max() == column.min():
        return 0.0, 3.0
    centred = column - column.mean()
    m2 = float(np.mean(centred**2))
    return float(np.mean(centred**3)) / m2**1.5, float(np.mean(centred**4)) / m2**2


Metric = Callable[[Matrix], Vector]


@dataclass(frozen=True)
class Pbo:
    """CSCV's verdict: the Probability of Backtest Overfitting and its companions."""

    pbo: float  #: share of splits whose in-sample best ranks at or below the OOS median
    splits: int  #: S, the number of submatrices
    combinations: int  #: C(S, S/2), the number of train/test splits
    logits: Vector  #: λ_c = ln(ω_c / (1 − ω_c)), ω_c the OOS relative rank of the IS best
    is_best: Vector  #: the in-sample best's in-sample performance, per split
    oos_of_best: Vector  #: the in-sample best's out-of-sample performance, per split
    degradation_slope: float  #: of the regression of oos_of_best on is_best
    degradation_intercept: float
    prob_oos_loss: float  #: share of splits where the IS best loses out of sample


def pbo(returns: Matrix, *, splits: int = DEFAULT_SPLITS, metric: Metric | None = None) -> Pbo:
    """The Probability of Backtest Overfitting by combinatorially symmetric cross-validation.

    The ``T × N`` matrix is cut into ``splits`` (even) consecutive submatrices of equal
    length (the last ``T mod S`` rows are dropped). For each of the ``C(S, S/2)`` ways to
    take half of them as the training set J (the rest, J̄, is the test set), the column
    with the best ``metric`` on J is found and its rank ``r`` (1 = worst) among the
    columns' ``metric`` on J̄ gives ``ω = r / (N + 1)`` and the logit ``λ = ln(ω/(1−ω))``.
    PBO is the share of ``λ ≤ 0``. ``metric`` maps a rows × N matrix to N values (the
    per-period Sharpe ratio by default). Ties in the test ranking take their average rank.
    """
    matrix = _matrix(returns)
    t, n = matrix.shape
    if splits < 2 or splits % 2:
        raise OverfitInputError(f"CSCV needs an even number of submatrices ≥ 2, got {splits}")
    if n < 2:
        raise OverfitInputError(f"PBO compares trials: it needs at least 2, got {n}")
    size = t // splits
    if size * (splits // 2) < 2:
        raise OverfitInputError(f"{t} days cut into {splits} submatrices leave fewer than 2 "
                                "days per half; use fewer submatrices or more days")
    blocks = [matrix[i * size:(i + 1) * size] for i in range(splits)]
    combos = list(itertools.combinations(range(splits), splits // 2))
    parts = []
    step = max(1, _CHUNK_CELLS // n)  # bounded memory: 12,870 splits × 1,000 runs is 100 MB
    for first in range(0, len(combos), step):
        chunk = combos[first:first + step]
        if metric is None:
            r_is, r_oos = _split_sharpes(blocks, chunk)
        else:
            r_is, r_oos = (np.stack([metric(np.concatenate([blocks[b] for b in part]))
                                     for part in sides])
                           for sides in (chunk, [_rest(c, splits) for c in chunk]))
        parts.append(_selected(r_is, r_oos))
    logits, is_best, oos_best = (np.concatenate(p) for p in zip(*parts, strict=True))
    slope, intercept = _fit(is_best, oos_best)
    return Pbo(pbo=float(np.mean(logits <= 0.0)), splits=splits, combinations=len(combos),
               logits=logits, is_best=is_best, oos_of_best=oos_best, degradation_slope=slope,
               degradation_intercept=intercept, prob_oos_loss=float(np.mean(oos_best < 0.0)))


def _selected(r_is: Matrix, r_oos: Matrix) -> tuple[Vector, Vector, Vector]:
    """Per split (row): the logit of the IS best's OOS rank, its IS and its OOS result."""
    n = r_is.shape[1]
    star = np.argmax(r_is, axis=1)
    rows = np.arange(r_is.shape[0])
    best_oos = r_oos[rows, star][:, None]
    # The average rank (1 = worst) of the IS best among the test results, as rankdata's.
    rank = (r_oos < best_oos).sum(axis=1) + ((r_oos == best_oos).sum(axis=1) + 1) / 2
    omega = rank / (n + 1)
    return np.log(omega / (1.0 - omega)), r_is[rows, star], r_oos[rows, star]


def _rest(train: tuple[int, ...], splits: int) -> tuple[int, ...]:
    return tuple(b for b in range(splits) if b not in train)


def _split_sharpes(blocks: list[Matrix], combos: list[tuple[int, ...]]) -> tuple[Matrix, Matrix]:
    """Per-period Sharpe of every column on every training set and its test set, from the
    blocks' sums and sums of squares (one matrix product instead of C(S, S/2) copies)."""
    splits = len(blocks)
    sums = np.stack([b.sum(axis=0) for b in blocks])
    squares = np.stack([(b**2).sum(axis=0) for b in blocks])
    lows = np.stack([b.min(axis=0) for b in blocks])
    highs = np.stack([b.max(axis=0) for b in blocks])
    pick = np.zeros((len(combos), splits))
    for c, train in enumerate(combos):
        pick[c, list(train)] = 1.0
    count = blocks[0].shape[0] * splits // 2
    out = []
    for mask in (pick, 1.0 - pick):
        chosen = mask.astype(bool)
        s1, s2 = mask @ sums, mask @ squares
        var = (s2 - s1**2 / count) / (count - 1)
        low = np.stack([lows[m].min(axis=0) for m in chosen])
        high = np.stack([highs[m].max(axis=0) for m in chosen])
        constant = (low == high) | (var <= 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(constant, 0.0, (s1 / count) / np.sqrt(np.where(constant, 1.0, var)))
        out.append(np.asarray(ratio, dtype=np.float64))
    return out[0], out[1]


def _fit(x: Vector, y: Vector) -> tuple[float, float]:
    """Least-squares slope and intercept of y on x; slope 0 when x does not vary."""
    if x.max() == x.min():
        return 0.0, float(y.mean())
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def cscv_splits(n_days: int, *, most: int = DEFAULT_SPLITS,
                min_block: int = MIN_BLOCK_DAYS) -> int:
    """The largest even S ≤ ``most`` whose submatrices hold ``min_block`` days each; 0 when
    not even S = 4 fits (two splits say nothing: each is the other reversed)."""
    s = min(most, n_days // min_block)
    s -= s % 2
    return s if s >= 4 else 0


@dataclass(frozen=True)
class Fold:
    """One walk-forward step: train on ``[train_start, test_start)``, test on
    ``[test_start, test_end)`` (row indices); ``pick`` is the column chosen on train."""

    train_start: int
    test_start: int
    test_end: int
    pick: int
    train_sharpe: float
    test_sharpe: float


@dataclass(frozen=True)
class WalkForward:
    """The folds and the Sharpe of their concatenated out-of-sample returns."""

    folds: tuple[Fold, ...]
    oos_returns: Vector
    oos_sharpe: float  #: per period


def walk_forward(returns: Matrix, *, train: int, test: int) -> WalkForward:
    """Choose the best Sharpe on ``train`` rows, hold it for the next ``test`` rows, roll on
    by ``test`` rows, until no full training window and at least 2 test rows remain.

    The out-of-sample series is the chosen column's returns on each test window, in order
    (the last window may be shorter).
    """
    matrix = _matrix(returns)
    t = matrix.shape[0]
    if train < 2 or test < 1:
        raise OverfitInputError(f"walk-forward needs train ≥ 2 and test ≥ 1 days, got "
                                f"{train} and {test}")
    if t < train + 2:
        raise OverfitInputError(f"{t} days leave no test window after a {train}-day train")
    folds, pieces = [], []
    start = 0
    while start + train + 2 <= t:
        test_start = start + train
        test_end = min(test_start + test, t)
        in_sample = sharpe_ratios(matrix[start:test_start])
        pick = int(np.argmax(in_sample))
        piece = matrix[test_start:test_end, pick]
        folds.append(Fold(train_start=start, test_start=test_start, test_end=test_end,
                          pick=pick, train_sharpe=float(in_sample[pick]),
                          test_sharpe=float(sharpe_ratios(piece[:, None])[0])))
        pieces.append(piece)
        start += test
    oos = np.concatenate(pieces)
    return WalkForward(folds=tuple(folds), oos_returns=oos,
                       oos_sharpe=float(sharpe_ratios(oos[:, None])[0]))


def _matrix(returns: Matrix) -> Matrix:
    matrix = np.asarray(returns, dtype=np.float64)
    if matrix.ndim != 2:
        raise OverfitInputError(f"returns must be a days × trials matrix, got shape "
                                f"{matrix.shape}")
    if not np.isfinite(matrix).all():
        raise OverfitInputError("returns hold NaN or infinity; align the trials on common "
                                "days and drop missing ones first")
    return matrix


__all__ = [
    "DEFAULT_SPLITS", "DSR_SIGNIFICANT", "PBO_OVERFIT", "Deflated", "Fold",
    "OverfitInputError", "Pbo", "WalkForward", "annualise", "cscv_splits",
    "deflated_sharpe", "effective_trials", "expected_max_sharpe", "mean_correlation",
    "pbo", "probabilistic_sharpe", "sharpe_ratios", "walk_forward",
]
