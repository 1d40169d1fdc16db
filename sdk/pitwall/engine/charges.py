"""What trading costs and limits mean on the grid: cost rates, borrow, leverage limits.

Every cost is expressed as a fraction of the traded notional (or of the short notional
for borrow), so the engine can keep computing on a unit capital:

* ``commission_bps + slippage_bps`` per notional, a number;
* ``commission_per_share``: ``c`` per share is ``c / open`` per notional (the fill price
  is the open), a rate per grid cell;
* the spread: half of ``spread_bps`` ("fixed"), or half of the fill bar's
  ``(high − low) / open`` ("range"), paid on every trade;
* borrow: ``borrow_bps`` a year on the short notional, for the calendar time from one
  open to the next (ACT/365), paid from cash at that next open.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from pitwall.engine.fills import FloatArray, Rate
from pitwall.engine.grid import BarGrid, FloatGrid
from pitwall.errors import DataError, StrategyOutputError
from pitwall.models import Costs, Execution

_US_PER_YEAR = 365.0 * 86_400 * 1e6


def cost_rate(grid: BarGrid, bars: pl.DataFrame, costs: Costs) -> Rate:
    """The cost per traded notional: a float, or an ``(N, T)`` grid when it varies by cell."""
    rate = (costs.commission_bps + costs.slippage_bps) / 1e4
    if costs.spread_model == "fixed":
        rate += costs.spread_bps / 2e4
    per_cell: FloatGrid | None = None
    if costs.commission_per_share > 0:
        per_cell = costs.commission_per_share / grid.open
    if costs.spread_model == "range":
        half = 0.5 * (_on_grid(grid, bars, "high") - _on_grid(grid, bars, "low")) / grid.open
        if bool((half < 0).any()):
            raise DataError("a bar has high < low; fix the dataset")
        per_cell = half if per_cell is None else per_cell + half
    if per_cell is None:
        return float(rate)
    # Cells before a symbol's first bar are NaN; they never trade.
    return np.nan_to_num(per_cell + rate, nan=0.0)


def borrow_fraction(grid: BarGrid, costs: Costs) -> FloatArray | None:
    """``borrow[t]``: the fraction of short notional paid for holding from open ``t`` to ``t+1``."""
    if costs.borrow_bps == 0:
        return None
    held_us = np.diff(grid.ts).astype(np.float64)
    annual = costs.borrow_bps / 1e4
    return np.concatenate((annual * held_us / _US_PER_YEAR, [0.0]))


def _on_grid(grid: BarGrid, bars: pl.DataFrame, name: str) -> FloatGrid:
    if name not in bars.columns or not bars.schema[name].is_float():
        raise DataError(f"spread_model='range' needs a float column {name!r} in the bars")
    values = bars.get_column(name).cast(pl.Float64).to_numpy()
    n, t = grid.shape
    if grid.cells is None:
        return values.reshape(n, t)
    out = np.full(n * t, np.nan)
    out[grid.cells] = values
    # A missing bar is never traded; its range is irrelevant.
    return np.where(grid.present, out.reshape(n, t), 0.0)


@dataclass(frozen=True)
class Limited:
    """Targets after the leverage limits, and how many executed bars were scaled down."""

    target: FloatGrid
    clipped_bars: int


def limit_leverage(grid: BarGrid, target: FloatGrid, execution: Execution) -> Limited:
    """Apply ``max_gross`` (``Σ|w|``) and ``max_net`` (``|Σw|``) to the targets of every bar.

    "clip" scales the whole cross-section of a bar down by one factor (relative weights
    are kept); "refuse" raises naming the first bar over a limit. Only bars whose targets
    are executed (all but the last) count.
    """
    if execution.max_gross is None and execution.max_net is None:
        return Limited(target, 0)
    executed = target[:, :-1]
    scale = np.ones(executed.shape[1])
    worst: list[tuple[FloatArray, float, str]] = []
    if execution.max_gross is not None:
        gross = np.abs(executed).sum(axis=0)
        worst.append((gross, execution.max_gross, "gross"))
    if execution.max_net is not None:
        net = np.abs(executed.sum(axis=0))
        worst.append((net, execution.max_net, "net"))
    # A relative slack of 1e-12 keeps weights that sum to the limit exactly from clipping.
    for value, limit, _ in worst:
        over = value > limit * (1 + 1e-12)
        scale = np.where(over, np.minimum(scale, limit / np.where(over, value, 1.0)), scale)
    clipped = scale < 1.0
    if not bool(clipped.any()):
        return Limited(target, 0)
    if execution.leverage_policy == "refuse":
        raise StrategyOutputError(_refusal(grid, worst, int(np.argmax(clipped))))
    limited = target.copy()
    limited[:, :-1] *= scale[None, :]
    return Limited(limited, int(clipped.sum()))


def _refusal(grid: BarGrid, worst: list[tuple[FloatArray, float, str]], bar: int) -> str:
    ts = pl.Series([grid.ts[bar]]).cast(pl.Datetime("us", "UTC")).item()
    for value, limit, kind in worst:
        if value[bar] > limit * (1 + 1e-12):
            return (
                f"the targets decided at {ts} have {kind} leverage {value[bar]:.6g}, over "
                f"max_{kind}={limit:g} (leverage_policy='refuse'); lower the weights or use "
                "leverage_policy='clip'"
            )
    raise AssertionError("no limit exceeded")  # pragma: no cover
