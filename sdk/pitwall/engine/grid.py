"""Bars and weights laid out on a symbol × time grid, the shape the engine computes on.

The grid is *symbol-major*, ``(N, T)``: bars arrive sorted by ``(symbol, ts)``, so when
every symbol has every timestamp the price columns reshape into the grid without a copy
or a search. A missing bar is filled with the symbol's last close as both its open and
its close (a zero return) and marked absent, so the engine does not trade it there;
before a symbol's first bar its prices are NaN and it is never held.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from pitwall.errors import DataError, StrategyOutputError

FloatGrid = npt.NDArray[np.float64]
BoolGrid = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

BAR_COLUMNS: dict[str, pl.DataType] = {
    "ts": pl.Datetime("us", "UTC"),
    "symbol": pl.String(),
    "open": pl.Float64(),
    "close": pl.Float64(),
}


@dataclass(frozen=True, eq=False)
class BarGrid:
    """Prices of a universe on a ``(N symbols, T timestamps)`` grid.

    ``ts`` holds the union of the bars' timestamps (µs since the epoch, UTC), ``symbols``
    the sorted symbols. ``cells`` maps each bar row to its flat grid position, or is
    ``None`` when the grid is dense and bar row ``k`` *is* flat position ``k``.
    """

    ts: IntArray
    symbols: tuple[str, ...]
    open: FloatGrid
    close: FloatGrid
    present: BoolGrid
    cells: IntArray | None

    @property
    def shape(self) -> tuple[int, int]:
        """``(N, T)``."""
        return (len(self.symbols), len(self.ts))


def symbol_blocks(symbols: pl.Series) -> tuple[list[str], IntArray]:
    """Runs of equal symbols, in order: their values and their lengths."""
    runs = symbols.rle().struct.unnest()
    values = runs.get_column("value").to_list()
    lengths = runs.get_column("len").to_numpy().astype(np.int64)
    return values, lengths


def is_grouped_sorted(values: list[str], ts: IntArray, lengths: IntArray) -> bool:
    """Whether rows are sorted by ``(symbol, ts)`` with no repeated ``(symbol, ts)``."""
    if values != sorted(set(values)):
        return False
    # A decrease is allowed only where one symbol's block ends and the next begins.
    boundaries = np.cumsum(lengths)[:-1] - 1
    ok = ts[1:] > ts[:-1]  # a bool per step: no int64 temporary of the whole column
    ok[boundaries] = True
    return bool(ok.all())


def build_grid(bars: pl.DataFrame) -> BarGrid:
    """Lay ``bars`` (sorted by ``symbol, ts``) out on the grid; see the module docstring."""
    for name, dtype in BAR_COLUMNS.items():
        if name not in bars.columns or bars.schema[name] != dtype:
            raise DataError(f"bars need a column {name!r} of type {dtype}; check the dataset")
    if bars.height == 0:
        raise DataError("there are no bars to trade on; widen the date range or universe")
    ts = bars.get_column("ts").to_physical().to_numpy().astype(np.int64, copy=False)
    values, lengths = symbol_blocks(bars.get_column("symbol"))
    if not is_grouped_sorted(values, ts, lengths):
        raise DataError("bars must be sorted by (symbol, ts) with one bar per (symbol, ts)")
    opens = bars.get_column("open").to_numpy()
    closes = bars.get_column("close").to_numpy()
    n, t = len(values), int(lengths[0])
    if bool((lengths == t).all()):
        shared = ts[:t]
        if np.array_equal(ts.reshape(n, t), np.broadcast_to(shared, (n, t))):
            return BarGrid(
                ts=shared.copy(),
                symbols=tuple(values),
                open=opens.reshape(n, t),
                close=closes.reshape(n, t),
                present=np.ones((n, t), dtype=np.bool_),
                cells=None,
            )
    return _sparse_grid(ts, values, lengths, opens, closes)


def _sparse_grid(
    ts: IntArray, values: list[str], lengths: IntArray, opens: FloatGrid, closes: FloatGrid
) -> BarGrid:
    """The general case: some symbol lacks some timestamp."""
    grid_ts = np.unique(ts)
    n, t = len(values), len(grid_ts)
    cells = np.repeat(np.arange(n, dtype=np.int64) * t, lengths) + np.searchsorted(grid_ts, ts)
    present = np.zeros(n * t, dtype=np.bool_)
    present[cells] = True
    raw_close = np.full(n * t, np.nan)
    raw_close[cells] = closes
    present_grid = present.reshape(n, t)
    # A missing bar's price is the last close: open = close = last close, a zero return.
    close = ffill(raw_close.reshape(n, t), present_grid, fill=np.nan)
    open_ = close.copy().reshape(-1)
    open_[cells] = opens
    return BarGrid(
        ts=grid_ts,
        symbols=tuple(values),
        open=open_.reshape(n, t),
        close=close,
        present=present_grid,
        cells=cells,
    )


def last_present(present: BoolGrid) -> IntArray:
    """For each cell, the time index of the latest present cell at or before it (−1 if none)."""
    t = present.shape[1]
    idx = np.where(present, np.arange(t, dtype=np.int64)[None, :], np.int64(-1))
    np.maximum.accumulate(idx, axis=1, out=idx)
    return idx


def ffill(values: FloatGrid, present: BoolGrid, *, fill: float) -> FloatGrid:
    """Carry each row's last present value forward in time; ``fill`` before the first."""
    if bool(present.all()):
        return values
    last = last_present(present)
    out = np.take_along_axis(values, np.maximum(last, 0), axis=1)
    out[last < 0] = fill
    return out


def target_grid(grid: BarGrid, bars: pl.DataFrame, weights: pl.DataFrame) -> FloatGrid:
    """Targets on the grid: each weight forward-filled until the next one, 0 before the first.

    ``weights`` should come from :func:`pitwall.engine.validate_weights`; this re-checks
    only that every weight lands on a distinct bar, cheaply, because the engine trusts
    nothing that crossed the sandbox boundary.
    """
    n, t = grid.shape
    if weights.height == 0:
        return np.zeros((n, t))
    if weights.height > n * t:
        raise StrategyOutputError("more weights than bars; run validate_weights first")
    values, lengths = symbol_blocks(weights.get_column("symbol"))
    w_ts = weights.get_column("ts").to_physical().to_numpy().astype(np.int64, copy=False)
    if not is_grouped_sorted(values, w_ts, lengths):
        weights = weights.sort("symbol", "ts")
        values, lengths = symbol_blocks(weights.get_column("symbol"))
        w_ts = weights.get_column("ts").to_physical().to_numpy().astype(np.int64, copy=False)
    w = weights.get_column("weight").to_numpy()
    dense = grid.cells is None and values == list(grid.symbols) and bool((lengths == t).all())
    if dense and weights.height == bars.height:
        bar_ts = bars.get_column("ts").to_physical().to_numpy()
        if np.array_equal(w_ts, bar_ts):
            # Dense weights on dense bars: one weight per cell, nothing to fill.
            return np.ascontiguousarray(w.reshape(n, t), dtype=np.float64)
    cells = _weight_cells(grid, values, lengths, w_ts)
    raw = np.zeros(n * t)
    given = np.zeros(n * t, dtype=np.bool_)
    raw[cells] = w
    given[cells] = True
    if int(given.sum()) != len(cells):
        raise StrategyOutputError("two weights share a (ts, symbol); run validate_weights first")
    return ffill(raw.reshape(n, t), given.reshape(n, t), fill=0.0)


def _weight_cells(grid: BarGrid, values: list[str], lengths: IntArray, w_ts: IntArray) -> IntArray:
    """Flat grid positions of weight rows; every one must be a bar of its symbol."""
    t = grid.shape[1]
    index = {s: i for i, s in enumerate(grid.symbols)}
    unknown = [s for s in values if s not in index]
    if unknown:
        raise StrategyOutputError(
            f"weights name {unknown[0]!r}, which has no bars; run validate_weights first"
        )
    rows = np.repeat(np.array([index[s] for s in values], dtype=np.int64), lengths)
    cols = np.minimum(np.searchsorted(grid.ts, w_ts), t - 1)
    cells = rows * t + cols
    on_bar = (grid.ts[cols] == w_ts) & grid.present.reshape(-1)[cells]
    if not bool(on_bar.all()):
        raise StrategyOutputError("a weight is not on a bar; run validate_weights first")
    return cells
