"""The recursion with the fill model: a bar-by-bar pass in shares of a real capital.

The plain engine trades any size at the open. With a participation cap, lots, a minimum
notional or market impact (:mod:`pitwall.engine.fill_rules`) a fill depends on the book's
size in currency against the bar's volume, and a trade cut by the cap carries to later
bars: the path is sequential, like the threshold pass (:mod:`pitwall.engine.threshold`),
whose equations this pass extends. One loop over bars and symbols, compiled by Numba
(:func:`_liquidity_loop`); per bar ``t``:

1. drift the held weights to the open (``d``), as in the plain recursion;
2. pick the symbols that trade: a bar, a gap ``|a − d|`` of at least the rebalance
   threshold, or a trade carried from the bar before (a working order is not stopped by
   the threshold);
3. solve the plain cost equation for ``k`` on the moving symbols (Newton, as
   :func:`~pitwall.engine.fills.keep_fraction` does):
   the wanted trade is ``a·k − d`` of the equity at the open, ``× capital·E⁻/open`` shares;
4. apply the fill rules to each wanted trade; the executed trade ``y`` pays the cost rate
   and the impact of its size, from cash: ``P = E⁻·(1 − Σ(rᵢ + impactᵢ)|yᵢ|)``;
5. hold what was bought: ``h = (d + y) / (P/E⁻)``.

Where every rule lets the wanted trade through and impact is 0, ``y = a·k − d`` and this
is the plain recursion (a test compares them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from pitwall.engine import fill_rules
from pitwall.engine.fill_rules import FillRules, LiquidityStats
from pitwall.engine.fills import (
    _MAX_NEWTON_STEPS,
    _TOLERANCE,
    TRADE_EPSILON,
    FloatArray,
    Path,
    Rate,
    _apply_ruin,
)
from pitwall.engine.grid import BarGrid, FloatGrid
from pitwall.errors import DataError

_numba: Any
try:  # the compiled loop; without Numba the same loop runs as Python (slow, exact)
    import numba as _numba
except ImportError:  # pragma: no cover - numba is a runtime dependency
    _numba = None

# The per-fill rules, compiled for the loop below: the broker calls the same functions.
if _numba is not None:
    _jit = _numba.njit(cache=True, nogil=True, error_model="numpy")
    _room, _size = _jit(fill_rules.participation_room), _jit(fill_rules.fill_size)
    _impact = _jit(fill_rules.impact_fraction)
else:  # pragma: no cover
    _room, _size = fill_rules.participation_room, fill_rules.fill_size
    _impact = fill_rules.impact_fraction


@dataclass(frozen=True, eq=False)
class Liquidity:
    """The fill model and what it reads of the bars, ``(N, T)``: volume and σ per bar."""

    rules: FillRules
    capital: float
    volume: FloatGrid  # 0 where a symbol has no bar; inf: a forced sale, no rule applies
    sigma: FloatGrid  # the bar's Parkinson σ; 0 without impact
    #: What one share costs at each open when the recursion runs on adjusted prices
    #: (corporate actions): the raw open, so that lots, the cap and the minimum count real
    #: shares against real volume. None: the grid's own opens.
    share_price: FloatGrid | None = None


def liquidity_inputs(grid: BarGrid, bars: pl.DataFrame, rules: FillRules,
                     capital: float) -> Liquidity:
    """Lay out the bars' volume (and high/low for the impact's σ) on the grid."""
    n, t = grid.shape
    volume = _on_grid(grid, bars, "volume", rules) if rules.needs_volume else np.zeros((n, t))
    sigma = np.zeros((n, t))
    if rules.impact_coefficient > 0:
        high, low = (_on_grid(grid, bars, c, rules) for c in ("high", "low"))
        if bool((high < low).any()):
            raise DataError("a bar has high < low; fix the dataset")
        sigma = _sigma()(high, low)
    if bool((volume < 0).any()):
        raise DataError("a bar has a negative volume; fix the dataset")
    return Liquidity(rules=rules, capital=capital, volume=volume, sigma=sigma)


def _on_grid(grid: BarGrid, bars: pl.DataFrame, name: str, rules: FillRules) -> FloatGrid:
    """A numeric bar column on the grid, 0 where a symbol has no bar."""
    if name not in bars.columns or not bars.schema[name].is_numeric():
        what = "participation cap" if name == "volume" and rules.participation else "impact"
        raise DataError(f"the fill model's {what} needs a numeric {name!r} column in the "
                        "bars; use a dataset with OHLCV bars or turn the rule off")
    values = bars.get_column(name).cast(pl.Float64).to_numpy()
    n, t = grid.shape
    if grid.cells is None:
        out = values.reshape(n, t)
    else:
        flat = np.zeros(n * t)
        flat[grid.cells] = values
        out = flat.reshape(n, t)
    return np.where(np.isfinite(out), out, 0.0)


def _liquidity_loop(  # noqa: C901, PLR0912, PLR0915 - one compiled loop
    market: Any, target: Any, rates: Any, rate: float, borrow: Any, rules: Any,
    out: Any, grids: Any, stats: Any,
) -> int:
    """The pass of the module docstring over every bar (compiled by Numba).

    ``market`` is (opens, closes, present, volume, sigma, share price), ``(N, T)`` each,
    NaN prices replaced by 1; a cell of infinite volume is a forced sale (a delisting):
    the whole wanted trade, no rule applied; ``rates`` is ``(0, 0)`` when the rate is the
    number ``rate``; ``borrow`` is empty without borrow; ``rules`` is (capital, threshold,
    participation, lot, minimum, coefficient, needs_volume) with 0 for "off". ``out``
    rows are pre, post, close, turnover, gross, net, fee, book_gap (length ``T − 1``);
    ``grids`` are held, trades and costs ``(N, T − 1)``; ``stats`` gets capped fills,
    carried notional, carried bars, skipped trades and impact cost. Returns the number of
    trades. It stops at a non-positive equity (ruin; the caller zeroes what follows).
    """
    opens, closes, present, volume, sigma, shares = market
    capital, threshold, participation, lot, minimum, coefficient, needs_volume = rules
    held, trades, costs = grids
    n, t_len = opens.shape
    per_cell, has_borrow = rates.shape[0] > 0, borrow.shape[0] > 0
    h, d, gain = np.zeros(n), np.zeros(n), np.ones(n)
    move = np.zeros(n, dtype=np.bool_)
    carried = np.zeros(n, dtype=np.bool_)
    post, n_trades = 1.0, 0
    for j in range(t_len - 1):
        t = j + 1
        pre = 1.0
        if j > 0:
            gap, short = 0.0, 0.0
            for i in range(n):
                gain[i] = opens[i, t] / opens[i, t - 1]
                gap += h[i] * gain[i] - h[i]
                if h[i] < 0.0:
                    short -= h[i]
            if has_borrow:
                gap -= borrow[t - 1] * short
            out[7, j - 1] = gap
            pre = post * (1.0 + gap)
            if not pre > 0.0:
                break
            for i in range(n):
                d[i] = h[i] * gain[i] / (1.0 + gap)
        moving = False
        for i in range(n):
            apart = abs(target[i, t - 1] - d[i])
            move[i] = present[i, t] and apart > TRADE_EPSILON and (
                apart >= threshold or carried[i])
            moving = moving or move[i]
            if present[i, t] and not move[i]:
                carried[i] = False  # a carried symbol without a bar keeps working
        fee, turnover = 0.0, 0.0
        if moving:
            # Solve k = 1 − Σ rate·|a·k − d| over the moving symbols (fills.keep_fraction).
            keep = 1.0
            if per_cell or rate != 0.0:
                for _ in range(_MAX_NEWTON_STEPS + 1):
                    excess, slope = keep - 1.0, 1.0
                    for i in range(n):
                        if move[i]:
                            a = target[i, t - 1]
                            x = a * keep - d[i]
                            r_i = rates[i, t] if per_cell else rate
                            excess += r_i * abs(x)
                            slope += r_i * a * np.sign(x)
                    if not excess > _TOLERANCE:
                        break
                    step = min(excess / slope if slope > 0.0 else keep, keep)
                    if not step > 0.0:
                        break
                    keep -= step
            scale = capital * pre
            cut = False
            for i in range(n):
                if not move[i]:
                    continue
                price = shares[i, t]
                want = (target[i, t - 1] * keep - d[i]) * scale / price
                forced = volume[i, t] == np.inf  # a forced sale: everything, at once
                room = abs(want) if forced else _room(volume[i, t], participation,
                                                      needs_volume)
                size = room if forced else _size(want, room, price, lot, minimum)
                carried[i] = False
                if abs(want) > room:
                    stats[0] += 1.0
                    left = abs(want) - size
                    carried[i] = left > 0.0
                    cut = cut or carried[i]
                    stats[1] += left * price
                elif size == 0.0:
                    stats[3] += 1.0
                y = (target[i, t - 1] * keep - d[i] if forced  # exactly what is held
                     else (size if want > 0 else -size) * price / scale)
                impact = _impact(size, volume[i, t], sigma[i, t], coefficient)
                cost = ((rates[i, t] if per_cell else rate) + impact) * abs(y)
                trades[i, j], costs[i, j] = y, cost
                fee += cost
                turnover += abs(y)
                stats[4] += impact * abs(y) * scale
                if abs(y) > TRADE_EPSILON:
                    n_trades += 1
            if cut:
                stats[2] += 1.0
        k = 1.0 - fee
        post = pre * k
        if not post > 0.0:
            break
        marked, marked_abs, hsum = 0.0, 0.0, 0.0
        for i in range(n):
            h[i] = (d[i] + trades[i, j]) / k
            held[i, j] = h[i]
            m = closes[i, t] / opens[i, t]
            marked += h[i] * m
            marked_abs += abs(h[i]) * m
            hsum += h[i]
        book_bar = marked - hsum
        out[0, j], out[1, j], out[2, j] = pre, post, post * (1.0 + book_bar)
        out[3, j], out[6, j] = turnover, fee
        out[4, j] = marked_abs / (1.0 + book_bar)
        out[5, j] = marked / (1.0 + book_bar)
    return n_trades


_kernel: list[Any] = []
_sigma_ufunc: list[Any] = []


def _sigma() -> Any:
    """:func:`~pitwall.engine.fill_rules.bar_sigma` as a ufunc over the grid (compiled)."""
    if _numba is None:  # pragma: no cover
        return np.vectorize(fill_rules.bar_sigma, otypes=[np.float64])
    if not _sigma_ufunc:
        _sigma_ufunc.append(_numba.vectorize(["float64(float64, float64)"], cache=True)(
            fill_rules.bar_sigma))
    return _sigma_ufunc[0]


def _loop() -> Any:
    """The compiled :func:`_liquidity_loop`, built (or loaded from Numba's cache) on first use."""
    if _numba is None:  # pragma: no cover
        return _liquidity_loop
    if not _kernel:
        _kernel.append(_numba.njit(cache=True, nogil=True,
                                   error_model="numpy")(_liquidity_loop))
    return _kernel[0]


def simulate_liquidity(
    grid: BarGrid,
    target: FloatGrid,
    *,
    rate: Rate,
    borrow: FloatArray | None,
    threshold: float,
    liquidity: Liquidity,
) -> tuple[Path, LiquidityStats]:
    """Run the bar-by-bar recursion with the fill model (module docstring)."""
    n, t_len = grid.shape
    m = t_len - 1
    c = np.ascontiguousarray
    opens = c(np.where(np.isnan(grid.open), 1.0, grid.open))
    closes = c(np.where(np.isnan(grid.close), 1.0, grid.close))
    out = np.zeros((8, m))
    grids = (np.zeros((n, m)), np.zeros((n, m)), np.zeros((n, m)))
    stats = np.zeros(5)
    participation, lot, minimum, coefficient, needs_volume = liquidity.rules.scalars()
    shares = opens if liquidity.share_price is None else c(
        np.where(np.isfinite(liquidity.share_price), liquidity.share_price, opens))
    n_trades = _loop()(
        (opens, closes, c(grid.present), c(liquidity.volume), c(liquidity.sigma), shares),
        c(target, dtype=np.float64),
        np.zeros((0, 0)) if isinstance(rate, float) else c(rate),
        float(rate) if isinstance(rate, float) else 0.0,
        np.zeros(0) if borrow is None else c(borrow),
        (float(liquidity.capital), float(threshold), participation, lot, minimum,
         coefficient, needs_volume),
        out, grids, stats,
    )
    pre, post, close, turnover, gross, net, fee, book_gap = out
    cash, zero = np.ones(1), np.zeros(1)
    held, trades, costs = grids
    path = Path(
        pre=np.concatenate((cash, pre)),
        post=np.concatenate((cash, post)),
        close=np.concatenate((cash, close)),
        turnover=np.concatenate((zero, turnover)),
        gross=np.concatenate((zero, gross)),
        net=np.concatenate((zero, net)),
        n_trades=int(n_trades),
        fee=np.concatenate((zero, fee)),
        held=held,
        book_gap=book_gap,
        trades=trades,
        trade_cost=costs,
    )
    report = LiquidityStats(capped_fills=int(stats[0]), carried_notional=float(stats[1]),
                            carried_bars=int(stats[2]), skipped_trades=int(stats[3]),
                            impact_cost=float(stats[4]))
    return _apply_ruin(path), report
