"""Compiled loops for one-symbol books, used when Numba is installed (NumPy otherwise).

A sweep is thousands of small independent books. NumPy evaluates them as a dozen passes
over a ``(runs, bars)`` array; a compiled loop makes one pass and keeps every
intermediate in a register, which is what the benchmark's compiled reference does. The
equations are those of :func:`pitwall.notebook.sweep._chunk` (and of the general engine for
one symbol); a test checks that both give the same equity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from pitwall.engine.fills import TRADE_EPSILON

_numba: Any
try:  # Numba is optional: the NumPy path gives the same numbers, more slowly.
    import numba as _numba
except ImportError:  # pragma: no cover - numba is installed in the dev environment
    _numba = None


def _one_symbol_books(
    a: Any, opens: Any, closes: Any, rate: float, borrow: Any, equity: Any, trades: Any
) -> None:
    """Unit equity at every close of ``rows`` one-symbol books holding targets ``a``."""
    rows, t_len = a.shape
    shared = opens.shape[0] == 1
    for r in range(rows):
        p = 0 if shared else r
        equity[r, 0] = 1.0
        post, held, count, dead = 1.0, 0.0, 0, False
        for t in range(1, t_len):
            if dead:
                equity[r, t] = 0.0
                continue
            if t == 1:
                drift, pre = 0.0, 1.0
            else:
                g = opens[p, t] / opens[p, t - 1]
                gap = held * (g - 1.0) - borrow[t - 1] * max(-held, 0.0)
                pre = post * (1.0 + gap)
                drift = held * g / (1.0 + gap)
            x = a[r, t - 1]
            keep = 1.0
            if rate > 0.0:
                keep = (1.0 + rate * drift) / (1.0 + rate * x)
                if x * keep < drift:
                    keep = (1.0 - rate * drift) / (1.0 - rate * x)
                keep = max(keep, 0.0)
            if abs(x * keep - drift) > TRADE_EPSILON:
                count += 1
            post = pre * keep
            held = x
            mark = post * (1.0 + x * (closes[p, t] / opens[p, t] - 1.0))
            if not mark > 0.0:
                dead = True
                mark = 0.0
            equity[r, t] = mark
        trades[r] = count


def _sma_books(
    opens: Any, closes: Any, fast: Any, slow: Any, rate: float, equity: Any, trades: Any
) -> None:
    """SMA(fast) > SMA(slow) books of one symbol, the signal computed in the same pass.

    The means are differences of a running cumulative sum, bit-identical to
    :func:`pitwall.notebook.sweep.rolling_means`, so the signals equal the NumPy path's.
    """
    t_len = len(closes)
    csum = np.empty(t_len + 1)
    csum[0] = 0.0
    for t in range(t_len):
        csum[t + 1] = csum[t] + closes[t]
    for r in range(len(fast)):
        f, s = fast[r], slow[r]
        equity[r, 0] = 1.0
        post, held, count, dead, signal = 1.0, 0.0, 0, False, 0.0
        for t in range(t_len):
            if t > 0 and not dead:
                drift, pre = 0.0, 1.0
                if t > 1:
                    g = opens[t] / opens[t - 1]
                    gap = held * (g - 1.0)
                    pre = post * (1.0 + gap)
                    drift = held * g / (1.0 + gap)
                keep = 1.0
                if rate > 0.0:
                    keep = (1.0 + rate * drift) / (1.0 + rate * signal)
                    if signal * keep < drift:
                        keep = (1.0 - rate * drift) / (1.0 - rate * signal)
                    keep = max(keep, 0.0)
                if abs(signal * keep - drift) > TRADE_EPSILON:
                    count += 1
                post = pre * keep
                held = signal
                mark = post * (1.0 + held * (closes[t] / opens[t] - 1.0))
                if not mark > 0.0:
                    dead = True
                    mark = 0.0
                equity[r, t] = mark
            elif dead:
                equity[r, t] = 0.0
            if t >= max(f, s) - 1:
                above = ((csum[t + 1] - csum[t + 1 - f]) / f
                         > (csum[t + 1] - csum[t + 1 - s]) / s)
                signal = 1.0 if above else 0.0
        trades[r] = count


sma_books: Callable[..., None] | None = (
    None if _numba is None else _numba.njit(cache=True, nogil=True)(_sma_books)
)

one_symbol_books: Callable[..., None] | None = (
    None if _numba is None else _numba.njit(cache=True, nogil=True)(_one_symbol_books)
)


def run_books(
    a: np.ndarray, opens: np.ndarray, closes: np.ndarray, rate: float,
    borrow: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Equity ``(rows, T)`` and trade counts with the compiled loop, or None without Numba."""
    if one_symbol_books is None:
        return None
    rows, t_len = a.shape
    equity = np.empty((rows, t_len))
    trades = np.zeros(rows, dtype=np.int64)
    charge = np.zeros(t_len) if borrow is None else borrow
    one_symbol_books(np.ascontiguousarray(a, dtype=np.float64), opens, closes, float(rate),
                     charge, equity, trades)
    return equity, trades
