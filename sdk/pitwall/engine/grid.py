"""Bars and weights laid out on a symbol × time grid, the shape the engine computes on.

The grid is *symbol-major*, ``(N, T)``: bars arrive sorted by ``(symbol, ts)``, so when
every symbol has every timestamp the price columns reshape into the grid without a copy
or a search. A missing bar is filled with the symbol's last close as both its open and
its close (a zero return) and marked absent, so the engine does not trade it there;
before a symbol's first bar its prices are NaN and it is never held.
"""

from __future__ import annotations

import weakref
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


@dataclass(eq=False)
class BarsLayout:
    """What the validation and the engine both need to know of one bars frame.

    ``ts`` (µs), the symbols' runs (``values``, ``lengths``), whether the rows are sorted
    by ``(symbol, ts)`` without a repeated key, and the grid once built.
    """

    ts: IntArray
    values: list[str]
    lengths: IntArray
    sorted: bool
    grid: BarGrid | None = None


# The layout of the last bars frame seen: a run validates its weights against the bars
# and then executes them on the same bars, and the runs of a sweep share one frame.
_LAST_LAYOUT: list[tuple[weakref.ref[pl.DataFrame], tuple[object, ...], BarsLayout]] = []


def micros(ts: pl.Series) -> IntArray:
    """A ``Datetime("us")`` column as µs since the epoch, without a copy where possible."""
    dtype = ts.dtype
    if isinstance(dtype, pl.Datetime) and dtype.time_unit == "us" and ts.null_count() == 0:
        # to_numpy gives datetime64[us] (a view of one chunk); to_physical would run a query.
        return ts.to_numpy().view(np.int64)
    return ts.to_physical().to_numpy().astype(np.int64, copy=False)


def _address(values: npt.NDArray[np.generic]) -> int:
    return int(values.__array_interface__["data"][0])


_MAX_CHUNKS = 64


def _fingerprint(frame: pl.DataFrame, columns: tuple[str, ...]) -> tuple[object, ...]:
    """Changes if the frame's shape, schema, keys or the buffers of ``columns`` change.

    Polars frames are immutable but for a few in-place methods; a replaced or edited
    column gets new buffers (their addresses are read here without a copy, chunk by
    chunk), and the symbol column's ends and the height cover an edit of the keys. A
    column with nulls or in very many chunks gets a key equal to nothing (no reuse).
    """
    if frame.height == 0 or max(frame.n_chunks("all")) > _MAX_CHUNKS:
        return (object(),)
    buffers = []
    for name in columns:
        column = frame.get_column(name)
        if column.null_count():
            return (object(),)
        chunks = column.get_chunks() if column.n_chunks() > 1 else [column]
        buffers += [_address(chunk.to_numpy()) for chunk in chunks]
    symbols = frame.get_column("symbol")
    # The names and types (frame.schema builds a Schema object, several times slower).
    schema = (*frame.columns, *frame.dtypes)
    return (frame.height, schema, *buffers, symbols[0], symbols[-1])


def bars_layout(bars: pl.DataFrame) -> BarsLayout:
    """The :class:`BarsLayout` of ``bars``, reused while the same frame is passed again."""
    key = _fingerprint(bars, tuple(c for c in ("ts", "open", "close") if c in bars.columns))
    for ref, known, layout in list(_LAST_LAYOUT):  # a copy: another thread may replace it
        if ref() is bars and known == key:
            return layout
    ts = micros(bars.get_column("ts"))
    values, lengths = symbol_blocks(bars.get_column("symbol"))
    layout = BarsLayout(ts=ts, values=values, lengths=lengths,
                        sorted=is_grouped_sorted(values, ts, lengths))
    _LAST_LAYOUT[:] = [(weakref.ref(bars, _forget_layout), key, layout)]
    return layout


def _forget_layout(ref: weakref.ref[pl.DataFrame]) -> None:
    """The bars frame is gone: drop its layout, whose grid holds views of its prices."""
    if _LAST_LAYOUT and _LAST_LAYOUT[0][0] is ref:
        _LAST_LAYOUT.clear()


def build_grid(bars: pl.DataFrame) -> BarGrid:
    """Lay ``bars`` (sorted by ``symbol, ts``) out on the grid; see the module docstring."""
    schema = bars.schema  # built anew on each access: read once
    for name, dtype in BAR_COLUMNS.items():
        if schema.get(name) != dtype:
            raise DataError(f"bars need a column {name!r} of type {dtype}; check the dataset")
    if bars.height == 0:
        raise DataError("there are no bars to trade on; widen the date range or universe")
    layout = bars_layout(bars)
    if not layout.sorted:
        raise DataError("bars must be sorted by (symbol, ts) with one bar per (symbol, ts)")
    if layout.grid is None:
        layout.grid = _grid(bars, layout)
    return layout.grid


def _grid(bars: pl.DataFrame, layout: BarsLayout) -> BarGrid:
    ts, values, lengths = layout.ts, layout.values, layout.lengths
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


_ALIGNED: list[tuple[weakref.ref[pl.DataFrame], weakref.ref[pl.DataFrame], tuple[object, ...]]] = []


def mark_aligned(weights: pl.DataFrame, bars: pl.DataFrame) -> None:
    """Record that validated ``weights`` hold one row per bar of ``bars``, in their order."""
    if weights.height:
        key = _fingerprint(weights, ("ts", "weight"))
        _ALIGNED[:] = [(weakref.ref(weights), weakref.ref(bars), key)]


def _is_aligned(weights: pl.DataFrame, bars: pl.DataFrame) -> bool:
    for w_ref, b_ref, key in list(_ALIGNED):  # a copy: another thread may replace it
        if w_ref() is weights and b_ref() is bars:
            return _fingerprint(weights, ("ts", "weight")) == key
    return False


def target_grid(grid: BarGrid, bars: pl.DataFrame, weights: pl.DataFrame) -> FloatGrid:
    """Targets on the grid: each weight forward-filled until the next one, 0 before the first.

    ``weights`` should come from :func:`pitwall.engine.validate_weights`; this re-checks
    only that every weight lands on a distinct bar, cheaply, because the engine trusts
    nothing that crossed the sandbox boundary.
    """
    n, t = grid.shape
    if weights.height == 0:
        return np.zeros((n, t))
    if grid.cells is None and _is_aligned(weights, bars):
        # validate_weights found one weight per bar, in the bars' order, on a dense grid.
        w = weights.get_column("weight").to_numpy()
        return np.ascontiguousarray(w.reshape(n, t), dtype=np.float64)
    if weights.height > n * t:
        raise StrategyOutputError("more weights than bars; run validate_weights first")
    values, lengths = symbol_blocks(weights.get_column("symbol"))
    w_ts = micros(weights.get_column("ts"))
    if not is_grouped_sorted(values, w_ts, lengths):
        weights = weights.sort("symbol", "ts")
        values, lengths = symbol_blocks(weights.get_column("symbol"))
        w_ts = micros(weights.get_column("ts"))
    w = weights.get_column("weight").to_numpy()
    dense = grid.cells is None and values == list(grid.symbols) and bool((lengths == t).all())
    if dense and weights.height == bars.height:
        bar_ts = micros(bars.get_column("ts"))
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
