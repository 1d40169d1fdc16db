"""Parameter sweeps: the batched one-symbol books equal the general engine, run by run."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from engine_bars import make_bars

from pitwall.engine import run_vectorized
from pitwall.models import Costs
from pitwall.notebook import kernels
from pitwall.notebook.sweep import rolling_means, run_independent, sma_crossover_sweep, sweep


def _bars(n_bars: int = 120, symbols: tuple[str, ...] = ("A", "B")) -> pl.DataFrame:
    rng = np.random.default_rng(5)
    prices: dict[str, list[tuple[float, float] | None]] = {}
    for s in symbols:
        close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, n_bars)))
        opens = close * np.exp(rng.normal(0, 0.003, n_bars))
        prices[s] = [(float(o), float(c)) for o, c in zip(opens, close, strict=True)]
    return make_bars(prices)


def sma_weights(bars: pl.DataFrame, fast: int, slow: int) -> pl.DataFrame:
    """Module level so spawned processes can import it."""
    out = []
    for _, part in bars.group_by("symbol", maintain_order=True):
        means = rolling_means(part.get_column("close").to_numpy(), [fast, slow])
        out.append(part.select("ts", "symbol",
                               weight=pl.Series((means[fast] > means[slow]).astype(float))))
    return pl.concat(out)


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("bps", [0.0, 7.0])
def test_sma_sweep_equals_the_engine_for_every_symbol_and_pair(
    bps: float, compiled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert kernels.sma_books is not None  # numba is installed in the dev environment
    if not compiled:
        monkeypatch.setattr(kernels, "sma_books", None)
        monkeypatch.setattr(kernels, "one_symbol_books", None)
    bars = _bars()
    pairs = [(3, 10), (5, 20), (2, 7)]
    summary, equity = sma_crossover_sweep(bars, pairs, capital=1e4,
                                          costs=Costs(commission_bps=bps))
    assert equity.shape == (6, 120)
    for row, (symbol, fast, slow) in enumerate(summary.select("symbol", "fast", "slow").rows()):
        one = bars.filter(pl.col("symbol") == symbol)
        result = run_vectorized(one, sma_weights(one, fast, slow), capital=1e4,
                                costs=Costs(commission_bps=bps))
        assert equity[row] == pytest.approx(result.equity.get_column("equity").to_numpy(),
                                            rel=1e-12)
        assert summary.get_column("n_trades")[row] == result.n_trades


def test_compiled_and_numpy_books_agree_with_shorts_costs_and_borrow() -> None:
    rng = np.random.default_rng(9)
    opens = 20 * np.exp(np.cumsum(rng.normal(0, 0.02, (1, 200)), axis=1))
    closes = opens * np.exp(rng.normal(0, 0.01, opens.shape))
    targets = rng.uniform(-1.5, 1.5, (5, 200))
    borrow = np.full(200, 1e-4)
    runs = [run_independent(opens, closes, targets, capital=1.0, rate=0.002, borrow=borrow,
                            use_compiled=flag) for flag in (True, False)]
    assert runs[0].equity == pytest.approx(runs[1].equity, rel=1e-12)
    assert runs[0].n_trades.tolist() == runs[1].n_trades.tolist()


def test_generic_sweep_in_processes_matches_in_process() -> None:
    bars = _bars(60)
    params = [{"fast": 2, "slow": 5}, {"fast": 3, "slow": 9}]
    local = sweep(sma_weights, params, bars, ["A", "B"], capital=1e4)
    spread = sweep(sma_weights, params, bars, ["A", "B"], capital=1e4, processes=2)
    assert local == spread
    assert local[0] != local[1]
