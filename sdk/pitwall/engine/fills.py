"""Fills and the equity recursion on the ``(N, T)`` grid.

Two implementations of the same equations: one compiled pass over the bars
(:func:`simulate_compiled`, Numba, what :func:`simulate` runs), and blocked NumPy passes
vectorized over bars (:func:`simulate_numpy`, without Numba; a test checks they agree).

Notation (``docs/engine-conventions.md`` derives it): bar ``t`` trades at its open to the
target ``a(t) = w(t−1)`` and then holds ``h(t)`` (``= a(t)`` where the symbol has a bar)
of its post-cost equity ``P(t)``. ``G(t) = open(t+1)/open(t)`` and ``M(t) = close(t)/open(t)``
are per-symbol gross returns; ``d(t)`` are the weights drifted into the open of ``t``.

    d(t+1)  = h(t)·G(t) / (h(t)·G(t) summed − Σh(t) + 1)
    k(t)    = 1 − rate·Σ|a(t)·k(t) − d(t)|              (solved per bar, see keep_fraction)
    P(t)    = P(t−1) · (1 + Σh(t−1)·(G(t−1) − 1)) · k(t)  (a cumulative product)
    E(t)    = P(t) · (1 + Σh(t)·(M(t) − 1))              (marked at the close)

Bar 0 holds nothing (no decision precedes it), so arrays below cover bars ``1..T−1``:
column ``j`` is bar ``j+1``. In the NumPy passes large temporaries are reused in place
(memory bandwidth bounds them) and fused reductions (``einsum``) avoid materialising
products.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pitwall.engine.grid import BarGrid, BoolGrid, FloatGrid, last_present
from pitwall.errors import DataError

_numba: Any
try:  # the compiled loop; without Numba the NumPy passes below give the same path
    import numba as _numba
except ImportError:  # pragma: no cover - numba is a runtime dependency
    _numba = None

FloatArray = npt.NDArray[np.float64]
# A cost rate per traded notional: one number, or one per grid cell (per-share, spread).
Rate = float | FloatGrid

# A rebalance smaller than this fraction of equity is float noise, not a trade.
TRADE_EPSILON = 1e-12
# Newton on a piecewise-linear function ends in a few steps; this only bounds bad input.
_MAX_NEWTON_STEPS = 64
_MAX_FROZEN_PASSES = 64
# Blocks small enough that each array's block stays in the CPU cache during the per-bar
# work; the size is the fastest of those tried (docs/benchmarks.md, vectorized engine).
_BLOCK_CELLS = 1 << 16
_TOLERANCE = 4 * float(np.finfo(np.float64).eps)


@dataclass(frozen=True, eq=False)
class Path:
    """Per-bar results for a starting capital of 1 (length ``T``)."""

    pre: FloatArray  # equity at the open, before the trade
    post: FloatArray  # equity after the trade and its cost
    close: FloatArray  # equity marked at the close
    turnover: FloatArray  # traded notional / pre
    gross: FloatArray  # Σ|position| / equity at the close
    net: FloatArray  # Σ position / equity at the close
    n_trades: int
    fee: FloatArray | None = None  # cost / pre (None: no cost at all)
    held: FloatGrid | None = None  # (N, T−1) weights of post held after each bar's trade
    book_gap: FloatArray | None = None  # (T−1) book return from each open to the next
    trades: FloatGrid | None = None  # (N, T−1) trades / pre, when the solver recorded them
    trade_cost: FloatGrid | None = None  # (N, T−1) cost of each trade / pre (fill model)


def simulate(
    grid: BarGrid, target: FloatGrid, *, rate: Rate, borrow: FloatArray | None = None
) -> Path:
    """Run the constant-mix recursion for forward-filled ``target`` weights on ``grid``.

    ``rate`` is the cost per traded notional, a number or an ``(N, T)`` grid (column
    ``t`` applies to the trade at bar ``t``'s open). ``borrow[t]`` is the fraction of short
    notional charged for holding from bar ``t``'s open to the next (``None``: no borrow).
    """
    if grid.shape[1] == 1:
        one, zero = np.ones(1), np.zeros(1)
        return Path(pre=one, post=one, close=one, turnover=zero, gross=zero, net=zero,
                    n_trades=0)
    if _numba is not None:
        return simulate_compiled(grid, target, rate=rate, borrow=borrow)
    return simulate_numpy(grid, target, rate=rate, borrow=borrow)


def simulate_numpy(
    grid: BarGrid, target: FloatGrid, *, rate: Rate, borrow: FloatArray | None = None
) -> Path:
    """:func:`simulate` as blocked NumPy passes (the path without Numba; a test compares)."""
    executed = target[:, :-1]  # decided at the close of t−1, traded at the open of t
    opens, closes = grid.open[:, 1:], grid.close[:, 1:]
    rate = rate if isinstance(rate, float) else rate[:, 1:]
    borrow = None if borrow is None else borrow[1:]
    if grid.cells is None:
        return _pass(executed, executed, opens, closes, None, rate, borrow)
    present = grid.present[:, 1:]
    # Before its first bar a symbol's prices are NaN; 1.0 is a neutral gross return there.
    opens = np.where(np.isnan(opens), 1.0, opens)
    closes = np.where(np.isnan(closes), 1.0, closes)
    traded = np.where(present, executed, 0.0)
    last = last_present(grid.present)[:, 1:] - 1  # column index of the last bar, or < 0
    since = np.maximum(last, 0)
    # A position frozen by missing bars keeps its value at its last close.
    frozen_value = np.take_along_axis(traded * (closes / opens), since, axis=1)
    frozen = ~present & (last >= 0) & (frozen_value != 0.0)
    if not bool(frozen.any()):
        return _pass(traded, traded, opens, closes, present, rate, borrow)
    return _frozen_passes(traded, opens, closes, present, frozen, frozen_value, since, rate,
                          borrow)


def _frozen_passes(
    traded: FloatGrid,
    opens: FloatGrid,
    closes: FloatGrid,
    present: BoolGrid,
    frozen: BoolGrid,
    frozen_value: FloatGrid,
    since: npt.NDArray[np.int64],
    rate: Rate,
    borrow: FloatArray | None,
) -> Path:
    """Iterate to the fixed point where frozen weights agree with the path they imply.

    A frozen position's weight is ``value(s)·P(s)/P(t)`` (``s`` its last bar), which needs
    the path. The path up to the first bar where a frozen weight earns a non-zero return
    (its symbol's next bar) does not depend on it, so each pass makes a longer prefix exact
    and shrinks later errors by about ``|h·(G−1)|``; a handful of passes reach the fixed point.
    """
    held = traded.copy()
    post = np.ones(traded.shape[1])
    path: Path | None = None
    for _ in range(_MAX_FROZEN_PASSES):
        # After a wipe-out P is 0; those bars are zeroed by _apply_ruin whatever is held.
        ratio = np.divide(post[since], post[None, :], out=np.zeros(since.shape),
                          where=post[None, :] > 0)
        held[frozen] = (frozen_value * ratio)[frozen]
        path = _pass(held, traded, opens, closes, present, rate, borrow)
        change = np.abs(path.post[1:] - post)
        post = path.post[1:]
        if bool((change <= _TOLERANCE * np.abs(post)).all()):
            break
    assert path is not None
    return path


@dataclass
class _Columns:
    """Per-bar sums filled block by block; index ``j`` is bar ``j+1``."""

    book_gap: FloatArray  # Σh·(G − 1): the book's return from this open to the next
    keep: FloatArray
    turnover: FloatArray
    marked: FloatArray  # Σh·M: positions at the close / P
    marked_abs: FloatArray  # Σ|h|·M
    held: FloatArray  # Σh
    fee: FloatArray  # Σ rate·|trade|: cost / pre
    n_trades: int = 0


def _pass(
    held: FloatGrid,
    traded: FloatGrid,
    opens: FloatGrid,
    closes: FloatGrid,
    present: BoolGrid | None,
    rate: Rate,
    borrow: FloatArray | None,
) -> Path:
    """One evaluation of the recursion for given held weights (exact when none is frozen).

    Every per-bar quantity depends only on its own bar and the one before, so the grid is
    processed in blocks of bars small enough to stay in the CPU cache; only the final
    cumulative product runs along the whole path.
    """
    n, m = held.shape  # m = T − 1 bars that can hold something
    sums = _Columns(book_gap=np.zeros(m), keep=np.zeros(m), turnover=np.zeros(m),
                    marked=np.zeros(m), marked_abs=np.zeros(m), held=np.zeros(m),
                    fee=np.zeros(m))
    width = max(1, _BLOCK_CELLS // max(n, 1))
    for j0 in range(0, m, width):
        j1 = min(m, j0 + width)
        block_rate = rate if isinstance(rate, float) else rate[:, j0:j1]
        _block(held, traded, opens, closes, present, (block_rate, borrow), j0, j1, sums)
    growth = sums.keep.copy()
    growth[1:] *= 1.0 + sums.book_gap[:-1]
    post = np.cumprod(growth)
    pre = np.concatenate(([1.0], post[:-1] * (1.0 + sums.book_gap[:-1])))
    book_bar = sums.marked - sums.held  # the book's return from the open to the close
    close = post * (1.0 + book_bar)
    with np.errstate(divide="ignore", invalid="ignore"):
        gross = sums.marked_abs / (1.0 + book_bar)
        net = sums.marked / (1.0 + book_bar)
    cash, zero = np.ones(1), np.zeros(1)
    return _apply_ruin(
        Path(
            pre=np.concatenate((cash, pre)),
            post=np.concatenate((cash, post)),
            close=np.concatenate((cash, close)),
            turnover=np.concatenate((zero, sums.turnover)),
            gross=np.concatenate((zero, gross)),
            net=np.concatenate((zero, net)),
            n_trades=sums.n_trades,
            fee=np.concatenate((zero, sums.fee)),
            held=held,
            book_gap=sums.book_gap,
        )
    )


def _block(
    held: FloatGrid,
    traded: FloatGrid,
    opens: FloatGrid,
    closes: FloatGrid,
    present: BoolGrid | None,
    charges: tuple[Rate, FloatArray | None],
    j0: int,
    j1: int,
    sums: _Columns,
) -> None:
    """Fill ``sums`` for bars ``j0..j1−1``, reading one bar back for the drift into ``j0``.

    ``charges`` is the block's cost rate and the whole path's borrow fractions.
    """
    rate, borrow = charges
    m = held.shape[1]
    lo = max(j0 - 1, 0)
    lead = 1 if j0 == 0 else 0  # the first bar drifts from cash: d = 0
    h = held[:, lo:j1]
    hsum = h.sum(axis=0)
    gross_gap = opens[:, lo + 1 : min(j1, m - 1) + 1] / opens[:, lo : min(j1, m - 1)]
    g = gross_gap.shape[1]
    book_gap = np.einsum("ij,ij->j", h[:, :g], gross_gap) - hsum[:g]
    if borrow is not None:
        # Cash pays borrow on the short notional held until the next open.
        short = (np.abs(h[:, :g]).sum(axis=0) - hsum[:g]) / 2.0
        book_gap -= borrow[lo : lo + g] * short
    sums.book_gap[lo : lo + g] = book_gap
    width = j1 - j0
    trade = np.zeros((held.shape[0], width))
    k = width - lead
    with np.errstate(divide="ignore", invalid="ignore"):
        np.multiply(h[:, :k], gross_gap[:, :k], out=trade[:, lead:])
        trade[:, lead:] /= (1.0 + book_gap[:k])[None, :]
    target = traded[:, j0:j1]
    np.subtract(target, trade, out=trade)
    if present is not None:
        trade *= present[:, j0:j1]  # no trade without a bar
    keep, turnover, n_trades, fee = keep_fraction(target, trade, rate)
    sums.keep[j0:j1] = keep
    sums.fee[j0:j1] = fee
    sums.turnover[j0:j1] = turnover
    sums.n_trades += n_trades
    intrabar = closes[:, j0:j1] / opens[:, j0:j1]
    h = h[:, j0 - lo :]
    sums.marked[j0:j1] = np.einsum("ij,ij->j", h, intrabar)
    sums.marked_abs[j0:j1] = np.einsum("ij,ij->j", np.abs(h), intrabar)
    sums.held[j0:j1] = hsum[j0 - lo :]


def keep_fraction(
    target: FloatGrid, trade: FloatGrid, rate: Rate
) -> tuple[FloatArray, FloatArray, int, FloatArray]:
    """Solve, per bar, the fraction ``k`` of equity kept after paying for the rebalance.

    Holding the target ``a`` of post-cost equity ``k·E`` from drifted weights ``d`` trades
    ``E·Σ|a·k − d|`` and costs ``rate`` of it, so ``f(k) = k + rate·Σ|a·k − d| − 1 = 0``.
    ``f`` is convex and piecewise linear; Newton from ``k = 1`` with a slope at least the
    left derivative moves monotonically down to the root and lands on it. ``trade`` holds
    ``a − d`` on entry (zero where no trade is allowed) and is overwritten. Returns ``k``,
    the turnover ``Σ|a·k − d|``, the number of cells that traded and the fee ``Σ r·|a·k − d|``
    (``= 1 − k``, summed directly to keep its relative precision). ``rate`` is a number or
    a grid shaped like ``trade``.
    """
    m = trade.shape[1]
    if isinstance(rate, float) and rate == 0.0:
        np.abs(trade, out=trade)
        turnover = trade.sum(axis=0)
        return np.ones(m), turnover, int(np.count_nonzero(trade > TRADE_EPSILON)), np.zeros(m)
    keep = np.ones(m)
    keep -= _newton_step(trade, target, keep, rate)
    # trade(k) = (a − d) − a·(1 − k): move every bar to the first Newton iterate.
    np.subtract(trade, target * (1.0 - keep)[None, :], out=trade)
    size = np.abs(trade)
    turnover = size.sum(axis=0)
    # Where no trade changed sign on the way, the first step landed on the root.
    cols = np.flatnonzero(keep + _rate_sum(rate, size) - 1.0 > _TOLERANCE)
    if cols.size:
        sub_target = target[:, cols]
        sub_trade = trade[:, cols]
        sub_keep = keep[cols]
        sub_rate = rate if isinstance(rate, float) else rate[:, cols]
        for _ in range(_MAX_NEWTON_STEPS):
            step = _newton_step(sub_trade, sub_target, sub_keep, sub_rate)
            if not bool((step > 0).any()):
                break
            sub_keep -= step
            sub_trade -= sub_target * step[None, :]
        keep[cols] = sub_keep
        size[:, cols] = np.abs(sub_trade)
        turnover[cols] = size[:, cols].sum(axis=0)
    fee = rate * turnover if isinstance(rate, float) else _rate_sum(rate, size)
    return keep, turnover, int(np.count_nonzero(size > TRADE_EPSILON)), fee


def _rate_sum(rate: Rate, size: FloatGrid) -> FloatArray:
    """``Σᵢ rateᵢ·sizeᵢ`` per bar."""
    if isinstance(rate, float):
        return np.asarray(rate * size.sum(axis=0), dtype=np.float64)
    return np.asarray(np.einsum("ij,ij->j", rate, size), dtype=np.float64)


def _newton_step(
    trade: FloatGrid, target: FloatGrid, keep: FloatArray, rate: Rate
) -> FloatArray:
    """How far one Newton step moves ``k`` down from ``keep`` (``trade = a·keep − d``).

    A zero trade has sign 0, so the slope used is at least the left derivative, which
    keeps the iterate at or above the root. Past ruin (slope ≤ 0) it moves ``k`` to 0.
    """
    excess = keep + _rate_sum(rate, np.abs(trade)) - 1.0
    slope = 1.0 + _rate_sum(rate, target * np.sign(trade))
    ok = slope > 0
    step = np.where(ok, excess / np.where(ok, slope, 1.0), keep)
    return np.where(excess > _TOLERANCE, np.minimum(step, keep), 0.0)


def _apply_ruin(path: Path) -> Path:
    """Equity that reaches zero at any mark ends the game: 0 from that bar on, no trading."""
    bad = (path.post <= 0) | (path.pre <= 0) | (path.close <= 0) | ~np.isfinite(path.close)
    if not bool(bad.any()):
        return path
    first = int(np.argmax(bad))
    fee = np.zeros_like(path.pre) if path.fee is None else path.fee
    arrays = [a.copy() for a in (path.pre, path.post, path.close, path.turnover)]
    arrays += [path.gross.copy(), path.net.copy(), fee.copy()]
    for arr in arrays:
        arr[first:] = 0.0
    pre, post, close, turnover, gross, net, fee = arrays
    return Path(pre=pre, post=post, close=close, turnover=turnover, gross=gross, net=net,
                n_trades=path.n_trades, fee=fee, held=path.held, book_gap=path.book_gap,
                trades=path.trades, trade_cost=path.trade_cost)


def _recursion_loop(  # noqa: C901, PLR0912, PLR0915 - one compiled loop, see below
    grid: Any, rate: float, borrow: Any, out: Any, held: Any, book_gap: Any,
) -> tuple[int, bool, bool]:
    """The recursion of the module docstring in one pass over the bars (compiled by Numba).

    ``grid`` is (opens, closes, present, target, rates): ``(N, T)`` each, ``present`` and
    ``rates`` ``(0, 0)`` when every cell has a bar or the rate is the number ``rate``;
    ``borrow`` is empty without borrow. ``out`` rows are pre, post, close, turnover,
    gross, net, fee (length ``T``); ``held`` is written only when ``present`` is a grid.
    Returns the number of trades, whether every price of a bar is positive and finite, and
    whether the equity reached 0 (or stopped being finite) at some mark (ruin).

    One function on purpose: split into compiled helpers, the arrays passed per bar cost
    reference counting that made the loop several times slower.
    """
    opens, closes, present, target, rates = grid
    n, t_len = opens.shape
    dense, per_cell, has_borrow = present.shape[0] == 0, rates.shape[0] > 0, borrow.shape[0] > 0
    h, drift, reach, gain = np.zeros(n), np.zeros(n), np.zeros(n), np.ones(n)
    ok = True
    for i in range(n):
        o, c = opens[i, 0], closes[i, 0]
        if (dense or present[i, 0]) and not (0.0 < o < np.inf and 0.0 < c < np.inf):
            ok = False
    out[:3, 0] = 1.0
    out[3:, 0] = 0.0
    post, n_trades, ruined = 1.0, 0, False
    for t in range(1, t_len):
        pre = post
        if t > 1:
            # Drift the held weights from the last open to this one; the book's return.
            gap, short = 0.0, 0.0
            for i in range(n):
                o1, o0 = opens[i, t], opens[i, t - 1]
                # A NaN price (before a symbol's first bar) counts as 1: nothing is held.
                gain[i] = (1.0 if np.isnan(o1) else o1) / (1.0 if np.isnan(o0) else o0)
                gap += h[i] * gain[i] - h[i]
                if h[i] < 0.0:
                    short -= h[i]
            if has_borrow:
                gap -= borrow[t - 1] * short
            book_gap[t - 2] = gap
            pre = post * (1.0 + gap)
            for i in range(n):
                drift[i] = h[i] * gain[i] / (1.0 + gap)
                # Where the bar is missing no trade: its aim and reach are 0.
                reach[i] = drift[i] if dense or present[i, t] else 0.0
        # Solve k = 1 − Σ rate·|a·k − d| by Newton from 1 (see keep_fraction).
        keep = 1.0
        if per_cell or rate != 0.0:
            for _ in range(_MAX_NEWTON_STEPS + 1):
                excess, slope = keep - 1.0, 1.0
                for i in range(n):
                    a = target[i, t - 1] if dense or present[i, t] else 0.0
                    x = a * keep - reach[i]
                    r_i = rates[i, t] if per_cell else rate
                    excess += r_i * abs(x)
                    slope += r_i * a * np.sign(x)
                if not excess > _TOLERANCE:
                    break
                step = min(excess / slope if slope > 0.0 else keep, keep)
                if not step > 0.0:
                    break
                keep -= step
        turnover, fee, marked, marked_abs, hsum = 0.0, 0.0, 0.0, 0.0, 0.0
        for i in range(n):
            o, c = opens[i, t], closes[i, t]
            if dense or present[i, t]:
                if not (0.0 < o < np.inf and 0.0 < c < np.inf):
                    ok = False
                size = abs(target[i, t - 1] * keep - reach[i])
                turnover += size
                if per_cell:
                    fee += rates[i, t] * size
                if size > TRADE_EPSILON:
                    n_trades += 1
                h[i] = target[i, t - 1]
            else:
                # No bar: no trade; the position keeps its value (its weight drifts).
                h[i] = drift[i] / keep if keep > 0.0 else 0.0
                o = 1.0 if np.isnan(o) else o
                c = 1.0 if np.isnan(c) else c
            if not dense:
                held[i, t - 1] = h[i]
            marked += h[i] * (c / o)
            marked_abs += abs(h[i]) * (c / o)
            hsum += h[i]
        post = post * ((1.0 + book_gap[t - 2]) * keep if t > 1 else keep)
        book_bar = marked - hsum
        out[0, t], out[1, t], out[2, t] = pre, post, post * (1.0 + book_bar)
        out[3, t] = turnover
        out[4, t] = marked_abs / (1.0 + book_bar)
        out[5, t] = marked / (1.0 + book_bar)
        out[6, t] = fee if per_cell else rate * turnover
        if not (pre > 0.0 and post > 0.0 and 0.0 < out[2, t] < np.inf):
            ruined = True
    return n_trades, ok, ruined


def _single_loop(  # noqa: C901, PLR0915 - the loop above for one symbol, see below
    grid: Any, rate: float, borrow: Any, out: Any, held: Any, book_gap: Any,
) -> tuple[int, bool, bool]:
    """:func:`_recursion_loop` for one symbol (a dense grid): the same operations in the
    same order, so the same numbers bit for bit, without the loops over symbols.

    Those one-pass loops, and the branches for missing bars, cost more than the
    arithmetic when there is one symbol (a sweep's common case). Sums keep their ``0.0 +``
    start: it turns a −0.0 into 0.0 as the general loop does. ``held`` is not written.
    The gross exposure is ``|net|`` where that is the same number; where the two could
    differ (an infinite mark, a NaN's sign) the close is not finite and ruin zeroes them.
    """
    opens, closes, _, target, rates = grid
    t_len = opens.shape[1]
    per_cell, has_borrow = rates.shape[0] > 0, borrow.shape[0] > 0
    o, c = opens[0, 0], closes[0, 0]
    ok = 0.0 < o < np.inf and 0.0 < c < np.inf
    out[:3, 0] = 1.0
    out[3:, 0] = 0.0
    post, n_trades, ruined = 1.0, 0, False
    reach, growth = 0.0, 1.0
    for t in range(1, t_len):
        pre = post
        if t > 1:
            h = target[0, t - 2]  # held since the last open: the target traded there
            gain = opens[0, t] / opens[0, t - 1]
            gap = 0.0
            gap += h * gain - h
            if has_borrow:
                short = 0.0
                if h < 0.0:
                    short -= h
                gap -= borrow[t - 1] * short
            book_gap[t - 2] = gap
            growth = 1.0 + gap
            pre = post * growth
            reach = h * gain / growth
        a = target[0, t - 1]
        keep = 1.0
        if per_cell or rate != 0.0:
            r_i = rates[0, t] if per_cell else rate
            for _ in range(_MAX_NEWTON_STEPS + 1):
                x = a * keep - reach
                excess, slope = keep - 1.0, 1.0
                excess += r_i * abs(x)
                slope += r_i * a * np.sign(x)
                if not excess > _TOLERANCE:
                    break
                step = min(excess / slope if slope > 0.0 else keep, keep)
                if not step > 0.0:
                    break
                keep -= step
        o, c = opens[0, t], closes[0, t]
        if not (0.0 < o < np.inf and 0.0 < c < np.inf):
            ok = False
        size = abs(a * keep - reach)
        turnover, fee, marked, marked_abs, hsum = 0.0, 0.0, 0.0, 0.0, 0.0
        turnover += size
        if per_cell:
            fee += rates[0, t] * size
        if size > TRADE_EPSILON:
            n_trades += 1
        ratio = c / o
        marked += a * ratio
        marked_abs += abs(a) * ratio
        hsum += a
        post = post * (growth * keep if t > 1 else keep)
        book_bar = marked - hsum
        close = post * (1.0 + book_bar)
        out[0, t], out[1, t], out[2, t] = pre, post, close
        out[3, t] = turnover
        scale = 1.0 + book_bar
        net = marked / scale
        # One symbol: marked_abs is |marked| exactly, so over a positive scale the gross
        # exposure is |net| (a division spared; signs are exact in floating point).
        out[4, t] = abs(net) if scale > 0.0 else marked_abs / scale
        out[5, t] = net
        out[6, t] = fee if per_cell else rate * turnover
        if not (pre > 0.0 and post > 0.0 and 0.0 < close < np.inf):
            ruined = True
    return n_trades, ok, ruined


_kernels: dict[bool, Any] = {}


def _recursion(single: bool = False) -> Any:
    """The compiled :func:`_recursion_loop` (``single``: :func:`_single_loop`), built (or
    loaded from Numba's cache) on first use, each only when a run needs it.

    One signature, inputs read-only, so writable and read-only arrays (Polars hands out
    read-only views) share one compilation.
    """
    kernel = _kernels.get(single)
    if kernel is None:
        types: Any = _numba.types
        ro2, ro1 = (types.Array(types.float64, d, "C", readonly=True) for d in (2, 1))
        mask = types.Array(types.bool_, 2, "C", readonly=True)
        rw2, rw1 = types.float64[:, ::1], types.float64[::1]
        grid = types.Tuple((ro2, ro2, mask, ro2, ro2))
        signature = types.Tuple((types.int64, types.boolean, types.boolean))(
            grid, types.float64, ro1, rw2, rw2, rw1)
        kernel = _numba.njit(signature, cache=True, nogil=True, error_model="numpy")(
            _single_loop if single else _recursion_loop)
        _kernels[single] = kernel
    return kernel


_NONE_GRID = np.zeros((0, 0))
_NONE_MASK = np.zeros((0, 0), dtype=np.bool_)


def simulate_compiled(
    grid: BarGrid, target: FloatGrid, *, rate: Rate, borrow: FloatArray | None = None
) -> Path:
    """:func:`simulate` as one compiled pass over the bars; also checks the bars' prices.

    Raises :class:`~pitwall.errors.DataError` when a bar's price is not positive and finite.
    """
    n, t_len = grid.shape
    dense = grid.cells is None
    single = dense and n == 1
    if _numba is not None:
        kernel = _recursion(single)
    else:
        kernel = _single_loop if single else _recursion_loop
    out = np.empty((7, t_len))
    held = _NONE_GRID if dense else np.zeros((n, t_len - 1))
    # The loop writes every entry but the last (no open follows the last bar): not
    # zeroing the rest spares a pass over a fresh array.
    book_gap = np.empty(t_len - 1)
    book_gap[-1:] = 0.0
    rates = _NONE_GRID if isinstance(rate, float) else np.ascontiguousarray(rate)
    c = np.ascontiguousarray
    n_trades, ok, ruined = kernel(
        (c(grid.open), c(grid.close), _NONE_MASK if dense else c(grid.present),
         c(target, dtype=np.float64), rates),
        float(rate) if isinstance(rate, float) else 0.0,
        np.zeros(0) if borrow is None else c(borrow), out, held, book_gap,
    )
    if not ok:
        raise DataError("bars hold a non-positive or non-finite price; fix the dataset")
    pre, post, close, turnover, gross, net, fee = out
    path = Path(
        pre=pre, post=post, close=close, turnover=turnover, gross=gross, net=net,
        n_trades=int(n_trades), fee=fee, held=target[:, :-1] if dense else held,
        book_gap=book_gap,
    )
    return _apply_ruin(path) if ruined else path


def compiled_path() -> bool:
    """Whether :func:`simulate` runs the compiled pass (which checks the prices itself)."""
    return _numba is not None
