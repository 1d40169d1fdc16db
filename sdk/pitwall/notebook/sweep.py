"""Parameter sweeps: many parameter sets evaluated at once where the math allows it.

Two ways, by what the strategy is:

* :func:`sma_crossover_sweep` — each (symbol, parameter set) is an independent
  one-symbol portfolio. One symbol's book has a closed-form cost solve, so the whole
  sweep is elementwise on a ``(runs, bars)`` array plus one cumulative product per row;
  each rolling mean is computed once and shared by every pair that uses it.
* :func:`sweep` — any weight function over a universe: each parameter set is a full
  run (strategy → :func:`validate_weights` → :func:`run_vectorized` → metrics), spread
  over worker processes. The strategy runs in this machine's processes, unsandboxed: a
  local research tool; official runs go through the sandbox.

Conventions are the engine's (``docs/engine-conventions.md``): the target decided at the
close of bar ``t`` is traded at the open of ``t+1``, costs are paid so that the book holds
the target of its post-cost equity, equity is marked at the close.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from pitwall.engine.fills import TRADE_EPSILON, FloatArray
from pitwall.engine.grid import FloatGrid, symbol_blocks
from pitwall.engine.metrics import compute_metrics
from pitwall.models import Costs, Execution, Metrics
from pitwall.notebook import kernels

# Rows of the (runs, bars) array processed together: a few rows keep the temporaries small.
_CHUNK_ROWS = 8


@dataclass(frozen=True, eq=False)
class IndependentRuns:
    """Equity of ``B`` independent one-symbol portfolios: ``equity`` is ``(B, T)`` at the close."""

    equity: FloatGrid
    n_trades: npt.NDArray[np.int64]


def run_independent(
    opens: FloatGrid,
    closes: FloatGrid,
    targets: FloatGrid | Callable[[slice], FloatGrid],
    *,
    capital: float,
    rate: float = 0.0,
    borrow: FloatArray | None = None,
    rows: int | None = None,
    use_compiled: bool = True,
) -> IndependentRuns:
    """Execute ``targets`` (``(B, T)``, or a function giving rows ``slice``) one symbol each.

    ``opens``/``closes`` are ``(B, T)`` or ``(1, T)`` (shared by every run). ``rate`` is
    the cost per traded notional, ``borrow[t]`` the fraction of short notional paid from
    the open of ``t`` to the next; ``rows`` is the number of runs when ``targets`` is a
    function. ``use_compiled=False`` forces the NumPy path even where Numba is installed
    (the two agree; a test checks it). For one symbol the cost equation
    ``k = 1 − rate·|a·k − d|`` has the closed form ``k = (1 ± rate·d)/(1 ± rate·a)``.
    """
    if not callable(targets):
        rows = targets.shape[0]
    elif rows is None:
        raise ValueError("give rows, the number of runs, with a targets function")
    if opens.shape[0] not in (1, rows) or opens.shape != closes.shape:
        raise ValueError("opens and closes need one row, or one row per run")
    t_len = opens.shape[1]
    use_compiled = use_compiled and kernels.one_symbol_books is not None
    if not use_compiled:
        gain = opens[:, 1:] / opens[:, :-1] - 1.0  # G − 1, open to next open
        intrabar = closes / opens - 1.0  # M − 1
    equity = np.empty((rows, t_len))
    n_trades = np.zeros(rows, dtype=np.int64)
    for r0 in range(0, rows, _CHUNK_ROWS):
        part = slice(r0, min(rows, r0 + _CHUNK_ROWS))
        a = targets(part) if callable(targets) else targets[part]
        pick = part if opens.shape[0] > 1 else slice(0, 1)
        if use_compiled:
            compiled = kernels.run_books(a, opens[pick], closes[pick], rate, borrow)
            assert compiled is not None
            equity[part], n_trades[part] = compiled
            continue
        equity[part], n_trades[part] = _chunk(
            a[:, :-1], gain[pick], intrabar[pick, 1:], rate, borrow
        )
    equity *= capital
    return IndependentRuns(equity=equity, n_trades=n_trades)


def _chunk(
    a: FloatGrid, gain: FloatGrid, intrabar: FloatGrid, rate: float, borrow: FloatArray | None
) -> tuple[FloatGrid, npt.NDArray[np.int64]]:
    """Unit equity ``(rows, T)`` of one-symbol books holding ``a`` (bars 1..T−1)."""
    rows, m = a.shape
    gap = a[:, :-1] * gain[:, 1:]  # the book's return from each open to the next
    if borrow is not None:
        gap -= borrow[1:-1][None, :] * np.maximum(-a[:, :-1], 0.0)
    growth = np.empty((rows, m))
    growth[:, 0] = 1.0
    np.add(gap, 1.0, out=growth[:, 1:])
    drift = np.zeros((rows, m))
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(a[:, :-1] * (gain[:, 1:] + 1.0), growth[:, 1:], out=drift[:, 1:])
    if rate > 0.0:
        up = (1.0 + rate * drift) / (1.0 + rate * a)
        down = (1.0 - rate * drift) / (1.0 - rate * a)
        keep = np.where(a * up >= drift, up, down)
        np.clip(keep, 0.0, None, out=keep)
        growth *= keep
        traded = np.abs(a * keep - drift) > TRADE_EPSILON
    else:
        traded = np.abs(a - drift) > TRADE_EPSILON
    post = np.cumprod(growth, axis=1)
    equity = np.empty((rows, m + 1))
    equity[:, 0] = 1.0
    np.multiply(a, intrabar, out=equity[:, 1:])
    equity[:, 1:] += 1.0
    equity[:, 1:] *= post
    ruined = ~(equity > 0)  # NaN counts as ruin too
    if bool(ruined.any()):
        equity[np.logical_or.accumulate(ruined, axis=1)] = 0.0
    return equity, np.count_nonzero(traded, axis=1)


def rolling_means(close: FloatArray, windows: Sequence[int]) -> dict[int, FloatArray]:
    """Trailing means of ``close`` over each window (NaN until the window is full), once each."""
    csum = np.concatenate(([0.0], np.cumsum(close)))
    out: dict[int, FloatArray] = {}
    for w in sorted(set(windows)):
        if w < 1:
            raise ValueError(f"window {w} must be at least 1 bar")
        mean = np.full(len(close), np.nan)
        mean[w - 1 :] = (csum[w:] - csum[:-w]) / w
        out[w] = mean
    return out


def sma_crossover_sweep(
    bars: pl.DataFrame,
    pairs: Sequence[tuple[int, int]],
    *,
    capital: float,
    costs: Costs | None = None,
) -> tuple[pl.DataFrame, FloatGrid]:
    """Long when SMA(fast) > SMA(slow) of the close, flat otherwise, for every symbol × pair.

    ``bars`` must hold every symbol on the same timestamps, sorted by ``(symbol, ts)``.
    Returns a summary (``symbol, fast, slow, final_equity, total_return, n_trades``, one
    row per run, symbol-major) and the ``(runs, T)`` equity at every close.
    """
    costs = costs or Costs()
    if costs.commission_per_share or costs.borrow_bps or costs.spread_model != "fixed":
        raise ValueError("sma_crossover_sweep takes bps costs only; use sweep() for the rest")
    symbols, lengths = symbol_blocks(bars.get_column("symbol"))
    n = len(symbols)
    t_len = bars.height // n
    ts = bars.get_column("ts").to_physical().to_numpy()
    if bool((lengths != t_len).any()) or not np.array_equal(
        ts.reshape(n, t_len), np.broadcast_to(ts[:t_len], (n, t_len))
    ):
        raise ValueError("sma_crossover_sweep needs every symbol on the same timestamps, "
                         "sorted by (symbol, ts); use sweep() for ragged bars")
    opens = bars.get_column("open").to_numpy().reshape(n, t_len)
    closes = bars.get_column("close").to_numpy().reshape(n, t_len)
    rate = (costs.commission_bps + costs.slippage_bps + costs.spread_bps / 2) / 1e4
    windows = [w for pair in pairs for w in pair]
    equity = np.empty((n * len(pairs), t_len))
    trades = np.empty(n * len(pairs), dtype=np.int64)
    fast = np.array([f for f, _ in pairs], dtype=np.int64)
    slow = np.array([s for _, s in pairs], dtype=np.int64)
    if bool((fast < 1).any() or (slow < 1).any()):
        raise ValueError("SMA windows must be at least 1 bar")
    for i in range(n):
        rows = slice(i * len(pairs), (i + 1) * len(pairs))
        if kernels.sma_books is not None:
            # One compiled pass per book, the signal computed in it.
            kernels.sma_books(opens[i], closes[i], fast, slow, rate, equity[rows], trades[rows])
            equity[rows] *= capital
            continue
        means = rolling_means(closes[i], windows)

        def signal(part: slice, means: dict[int, FloatArray] = means) -> FloatGrid:
            # NaN > x is False: flat until the slow window is full.
            return np.stack([means[f] > means[s] for f, s in pairs[part]]).astype(np.float64)

        runs = run_independent(opens[i : i + 1], closes[i : i + 1], signal,
                               capital=capital, rate=rate, rows=len(pairs))
        equity[rows] = runs.equity
        trades[rows] = runs.n_trades
    summary = pl.DataFrame({
        "symbol": np.repeat(symbols, len(pairs)),
        "fast": np.tile([f for f, _ in pairs], n),
        "slow": np.tile([s for _, s in pairs], n),
        "final_equity": equity[:, -1],
        "total_return": equity[:, -1] / capital - 1.0,
        "n_trades": trades,
    })
    return summary, equity


WeightFunction = Callable[..., pl.DataFrame]
_WORKER: dict[str, Any] = {}


def sweep(
    strategy: WeightFunction,
    param_sets: Sequence[Mapping[str, Any]],
    bars: pl.DataFrame,
    universe: Sequence[str],
    *,
    capital: float,
    costs: Costs | None = None,
    execution: Execution | None = None,
    processes: int = 1,
) -> list[Metrics]:
    """Run ``strategy(bars, **params)`` for every parameter set; its metrics, in order.

    Each run is validated and executed like an official one. With ``processes > 1`` the
    runs are spread over that many spawned processes (``strategy`` must be importable,
    i.e. defined at module level); the bars are sent to each process once.
    """
    setup = (strategy, bars, list(universe), capital, costs or Costs(), execution)
    if processes <= 1:
        _init(*setup)
        try:
            return [_one(dict(p)) for p in param_sets]
        finally:
            _WORKER.clear()
    context = multiprocessing.get_context("spawn")  # fork can deadlock Polars' threads
    with ProcessPoolExecutor(max_workers=processes, mp_context=context,
                             initializer=_init, initargs=setup) as pool:
        return list(pool.map(_one, [dict(p) for p in param_sets]))


def _init(strategy: WeightFunction, bars: pl.DataFrame, universe: list[str], capital: float,
          costs: Costs, execution: Execution | None) -> None:
    _WORKER.update(strategy=strategy, bars=bars, universe=universe, capital=capital,
                   costs=costs, execution=execution)


def _one(params: dict[str, Any]) -> Metrics:
    from pitwall.engine.validate import validate_weights
    from pitwall.engine.vectorized import run_vectorized

    bars = _WORKER["bars"]
    weights = validate_weights(_WORKER["strategy"](bars, **params), bars, _WORKER["universe"])
    result = run_vectorized(bars, weights, capital=_WORKER["capital"], costs=_WORKER["costs"],
                            execution=_WORKER["execution"])
    return compute_metrics(result)
