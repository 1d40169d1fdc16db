"""Overfitting statistics of sweeps (pitwall.engine.overfit, docs/overfitting.md): the
papers' worked numbers, a CSCV case enumerated by hand, and the two sweeps that matter,
pure noise (flagged) and one real edge among noise (not flagged)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from pitwall.engine import overfit
from pitwall.engine.metrics import sharpe
from pitwall.engine.overfit import OverfitInputError


def test_the_dsr_papers_numerical_example() -> None:
    """Bailey & López de Prado, "The Deflated Sharpe Ratio" (J. Portfolio Management 40(5),
    2014), section "A numerical example": N = 100 independent trials whose annualised
    Sharpe estimates have variance V = 1/2 give E[max SR] = 1.7894 a year, 0.1132 a day
    with 250 days a year; the best trial's annualised Sharpe 2.5 over T = 1250 daily
    returns with skewness −3 and kurtosis 10 has DSR = 0.9004."""
    benchmark = overfit.expected_max_sharpe(100, 0.5)
    assert benchmark == pytest.approx(1.7894, abs=1e-4)
    daily = benchmark / math.sqrt(250)
    assert daily == pytest.approx(0.1132, abs=1e-4)
    dsr = overfit.probabilistic_sharpe(2.5 / math.sqrt(250), daily, 1250, skew=-3.0,
                                       kurtosis=10.0)
    assert dsr == pytest.approx(0.9004, abs=1e-4)


def test_the_psr_is_the_normal_test_of_the_sharpe_for_normal_returns() -> None:
    """With skew 0 and kurtosis 3 the PSR against 0 is Φ(SR √(T−1) / √(1 + SR²/2))."""
    sr, t = 0.08, 500
    expected = stats.norm.cdf(sr * math.sqrt(t - 1) / math.sqrt(1 + sr**2 / 2))
    assert overfit.probabilistic_sharpe(sr, 0.0, t) == pytest.approx(expected, rel=1e-12)
    assert overfit.probabilistic_sharpe(sr, 0.0, t, skew=-1.0) < expected  # left tail costs


def test_correlated_trials_count_as_fewer() -> None:
    rng = np.random.default_rng(1)
    common = rng.normal(0, 0.01, size=(300, 1))
    alike = common + rng.normal(0, 0.001, size=(300, 20))  # 20 near-copies of one strategy
    apart = rng.normal(0, 0.01, size=(300, 20))
    assert overfit.mean_correlation(alike) > 0.95
    assert overfit.effective_trials(20, overfit.mean_correlation(alike)) < 2.0
    assert overfit.effective_trials(20, overfit.mean_correlation(apart)) > 19.0
    assert overfit.effective_trials(20, 1.0) == 1.0 and overfit.expected_max_sharpe(1, 1.0) == 0


def test_sharpe_ratios_agree_with_the_metrics_sharpe() -> None:
    rng = np.random.default_rng(2)
    matrix = rng.normal(0.0005, 0.01, size=(100, 4))
    matrix[:, 3] = 0.001  # constant: 0 by the metrics' convention
    ratios = overfit.sharpe_ratios(matrix)
    for n in range(4):
        assert overfit.annualise(float(ratios[n])) == pytest.approx(sharpe(matrix[:, n]))


def test_the_dsr_uses_the_best_trials_moments_as_scipy_computes_them() -> None:
    rng = np.random.default_rng(6)
    matrix = rng.standard_t(4, size=(400, 5)) * 0.01
    matrix[:, 2] += 0.002
    d = overfit.deflated_sharpe(matrix)
    assert d.best == 2
    assert d.skew == pytest.approx(stats.skew(matrix[:, 2]))
    assert d.kurtosis == pytest.approx(stats.kurtosis(matrix[:, 2], fisher=False))
    expected = stats.norm.cdf((d.sharpe - d.expected_max) * math.sqrt(399) / math.sqrt(
        1 - d.skew * d.sharpe + (d.kurtosis - 1) / 4 * d.sharpe**2))
    assert d.dsr == pytest.approx(expected, rel=1e-9)


#: Four one-day submatrices (rows) of three trials, enumerated in the next test.
HAND = np.array([[5, 1, 0], [5, 1, 5], [2, 3, 6], [6, 3, 1]], dtype=np.float64)


def test_cscv_on_a_case_enumerated_by_hand() -> None:
    """S = 4 one-row submatrices, N = 3 trials, performance = the sum over the rows.

    ==========  =========  ======  ==========  ===========  ========
    train (J)   IS sums    IS best OOS sums    OOS rank     logit
    ==========  =========  ======  ==========  ===========  ========
    0, 1        10, 2, 5   0       8, 6, 7     3 (ω = 3/4)  ln 3
    0, 2        7, 4, 6    0       11, 4, 6    3            ln 3
    0, 3        11, 4, 1   0       7, 4, 11    2 (ω = 1/2)  0
    1, 2        7, 4, 11   2       11, 4, 1    1 (ω = 1/4)  −ln 3
    1, 3        11, 4, 6   0       7, 4, 6     3            ln 3
    2, 3        8, 6, 7    0       10, 2, 5    3            ln 3
    ==========  =========  ======  ==========  ===========  ========

    PBO = #(λ ≤ 0) / 6 = 2/6. The IS best's (IS, OOS) pairs (10, 8), (7, 11), (11, 7),
    (11, 1), (11, 7), (8, 10) have means 29/3 and 22/3 and the least-squares slope
    Σdx·dy / Σdx² = (−210/9) / (138/9) = −35/23 (the paper's performance degradation);
    none loses out of sample.
    """
    result = overfit.pbo(HAND, splits=4, metric=lambda m: m.sum(axis=0))
    ln3 = math.log(3)
    assert result.combinations == 6
    assert result.logits.tolist() == pytest.approx([ln3, ln3, 0.0, -ln3, ln3, ln3])
    assert result.pbo == pytest.approx(1 / 3)
    assert result.is_best.tolist() == [10, 7, 11, 11, 11, 8]
    assert result.oos_of_best.tolist() == [8, 11, 7, 1, 7, 10]
    assert result.degradation_slope == pytest.approx(-35 / 23)
    assert result.prob_oos_loss == 0.0


def _reference_pbo(matrix: np.ndarray, splits: int) -> tuple[float, list[float]]:
    """CSCV written out as the paper's steps, one split at a time, with scipy's ranks and
    each half's Sharpe computed from its own rows (no shared code with the module)."""
    size = matrix.shape[0] // splits
    blocks = [matrix[i * size:(i + 1) * size] for i in range(splits)]
    logits = []
    for train in itertools.combinations(range(splits), splits // 2):
        j = np.vstack([blocks[b] for b in train])
        jbar = np.vstack([blocks[b] for b in range(splits) if b not in train])
        r = j.mean(axis=0) / j.std(axis=0, ddof=1)
        rbar = jbar.mean(axis=0) / jbar.std(axis=0, ddof=1)
        omega = stats.rankdata(rbar)[int(np.argmax(r))] / (matrix.shape[1] + 1)
        logits.append(math.log(omega / (1 - omega)))
    return float(np.mean(np.array(logits) <= 0)), logits


def test_pbo_matches_the_papers_steps_written_out() -> None:
    rng = np.random.default_rng(4)
    matrix = rng.normal(0.0002, 0.01, size=(240, 12))
    expected, logits = _reference_pbo(matrix, 8)
    result = overfit.pbo(matrix, splits=8)
    assert result.pbo == pytest.approx(expected)
    assert result.logits.tolist() == pytest.approx(logits)
    assert result.combinations == math.comb(8, 4) == len(logits)


def _noise(seed: int) -> np.ndarray:
    """Two years of daily returns of 100 strategies with no edge (1% daily volatility)."""
    return np.random.default_rng(seed).normal(0.0, 0.01, size=(504, 100))


def test_a_pure_noise_sweep_of_100_strategies_is_flagged() -> None:
    """For strategies with no edge the in-sample winner's out-of-sample rank is a coin toss,
    so PBO sits around 0.5 (this seed: 0.59) and the DSR of the best is far from 0.95,
    whatever its raw Sharpe (here 1.9 a year, as the maximum of 100 draws tends to be)."""
    noise = _noise(2)
    deflated = overfit.deflated_sharpe(noise)
    assert overfit.annualise(deflated.sharpe) > 1.5  # the raw winner looks good
    assert deflated.effective_trials > 95  # independent strategies
    assert deflated.dsr < 0.6
    cscv = overfit.pbo(noise)
    assert cscv.combinations == math.comb(16, 8)
    assert cscv.pbo >= overfit.PBO_OVERFIT
    assert cscv.degradation_slope < 0  # what looks best in-sample does worse out of sample
    walk = overfit.walk_forward(noise, train=126, test=63)
    assert abs(overfit.annualise(walk.oos_sharpe)) < 0.5
    assert len(walk.folds) == 6 and len({f.pick for f in walk.folds}) > 3  # picks wander


def test_noise_is_flagged_for_every_seed_not_one_chosen() -> None:
    dsrs, pbos = [], []
    for seed in range(5):
        noise = _noise(seed)
        dsrs.append(overfit.deflated_sharpe(noise).dsr)
        pbos.append(overfit.pbo(noise, splits=8).pbo)
    assert max(dsrs) < overfit.DSR_SIGNIFICANT
    assert 0.35 < float(np.mean(pbos)) < 0.7


def test_one_real_edge_among_noise_is_not_flagged() -> None:
    """Strategy 42 earns 0.3% a day on top of the noise (Sharpe ≈ 4.8 a year): it wins,
    survives deflation, is the in-sample best that stays on top out of sample, and the
    walk-forward picks it on every fold."""
    returns = _noise(2)
    returns[:, 42] += 0.003
    deflated = overfit.deflated_sharpe(returns)
    assert deflated.best == 42 and deflated.dsr > overfit.DSR_SIGNIFICANT
    cscv = overfit.pbo(returns)
    assert cscv.pbo < 0.05 and cscv.prob_oos_loss < 0.05
    walk = overfit.walk_forward(returns, train=252, test=63)
    assert {f.pick for f in walk.folds} == {42}
    assert overfit.annualise(walk.oos_sharpe) > 2.0


def test_walk_forward_rolls_by_the_test_window() -> None:
    rng = np.random.default_rng(5)
    matrix = rng.normal(0, 0.01, size=(100, 3))
    walk = overfit.walk_forward(matrix, train=40, test=25)
    assert [(f.train_start, f.test_start, f.test_end) for f in walk.folds] == [
        (0, 40, 65), (25, 65, 90), (50, 90, 100)]
    for f in walk.folds:  # each pick is the training window's best
        window = overfit.sharpe_ratios(matrix[f.train_start:f.test_start])
        assert f.pick == int(np.argmax(window)) and f.train_sharpe == window.max()
    picked = np.concatenate([matrix[f.test_start:f.test_end, f.pick] for f in walk.folds])
    assert walk.oos_returns.tolist() == picked.tolist()


def test_what_cannot_be_computed_says_why() -> None:
    short = np.zeros((10, 3))
    with pytest.raises(OverfitInputError, match="even number"):
        overfit.pbo(short, splits=3)
    with pytest.raises(OverfitInputError, match="at least 2"):
        overfit.pbo(np.zeros((40, 1)))
    with pytest.raises(OverfitInputError, match="fewer than 2 days"):
        overfit.pbo(np.zeros((3, 3)), splits=4)
    with pytest.raises(OverfitInputError, match="no test window"):
        overfit.walk_forward(short, train=9, test=5)
    with pytest.raises(OverfitInputError, match="NaN"):
        overfit.deflated_sharpe(np.full((10, 2), np.nan))
    assert overfit.cscv_splits(19) == 0 and overfit.cscv_splits(20) == 4
    assert overfit.cscv_splits(252) == 16 and overfit.cscv_splits(61) == 12


def test_cscv_in_chunks_of_splits_gives_the_same_answer(monkeypatch: pytest.MonkeyPatch,
                                                         ) -> None:
    """A 1,000-run sweep is scored a few splits at a time (bounded memory); the chunking
    must not change a logit."""
    rng = np.random.default_rng(8)
    matrix = rng.normal(0.0, 0.01, size=(120, 30))
    whole = overfit.pbo(matrix, splits=8)
    monkeypatch.setattr(overfit, "_CHUNK_CELLS", 7 * 30)  # 7 splits a chunk: 70 = 10 × 7
    chunked = overfit.pbo(matrix, splits=8)
    assert chunked.logits.tolist() == whole.logits.tolist()
    assert chunked.oos_of_best.tolist() == whole.oos_of_best.tolist()
