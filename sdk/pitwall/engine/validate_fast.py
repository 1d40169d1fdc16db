"""The fast path of weight validation: weights already in the bars' ``(symbol, ts)`` order.

A strategy usually returns one weight per bar, or a subset, in the order of the bars it
read. Then no join is needed: rows sorted by ``(symbol, ts)`` with strictly increasing
``ts`` per symbol cannot repeat a key, and each symbol's timestamps are found among that
symbol's bars with one binary search (or one array comparison when the weights are
aligned one-to-one with the bars). The checks and the "first bad row" are the same as
the general path's; anything else (nulls, another order) goes to the general path.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

from pitwall.engine import weight_rules as rules
from pitwall.engine.fills import _numba
from pitwall.engine.grid import (
    BarsLayout,
    bars_layout,
    is_grouped_sorted,
    mark_aligned,
    micros,
    symbol_blocks,
)
from pitwall.errors import StrategyOutputError

BoolArray = npt.NDArray[np.bool_]
_Word = TypeVar("_Word", bound=np.generic)


def check_sorted_rows(frame: pl.DataFrame, bars: pl.DataFrame, universe: set[str]) -> bool:
    """Check ``frame`` (coerced weights) if it is sorted; raise naming the first bad row.

    Returns False, having checked nothing, when the fast path does not apply.
    """
    if frame.null_count().row(0) != (0, 0, 0) or bars.height == 0:
        return False
    if bars.schema.get("ts") != pl.Datetime("us", "UTC") or bars.schema.get(
            "symbol") != pl.String:
        return False
    w_ts = _micros(frame.get_column("ts"))
    layout = bars_layout(bars)
    b_values, b_lengths, b_ts = layout.values, layout.lengths, layout.ts
    # One row per bar in the bars' order: the same timestamps and the same symbols.
    aligned = (frame.height == bars.height and np.array_equal(w_ts, b_ts)
               and frame.get_column("symbol").equals(bars.get_column("symbol")))
    if aligned:
        values, lengths = b_values, b_lengths
    else:
        values, lengths = symbol_blocks(frame.get_column("symbol"))
        if not is_grouped_sorted(values, w_ts, lengths):
            return False
    # Aligned keys are sorted if the bars are: one check serves both.
    if not layout.sorted:
        return False
    weight = frame.get_column("weight").to_numpy()
    if aligned and set(values) <= universe and _all_small(weight, rules.MAX_ABS_WEIGHT):
        mark_aligned(frame, bars)
        return True
    bad_symbol, not_bar = _key_checks(values, lengths, w_ts, (b_values, b_lengths, b_ts),
                                      universe)
    codes = (
        (np.isnan(weight), rules.NAN),
        (np.isinf(weight), rules.INF),
        (np.abs(weight) > rules.MAX_ABS_WEIGHT, rules.BIG),
        (bad_symbol, rules.SYMBOL),
        (not_bar, rules.NOT_BAR),
    )
    first = [(int(np.argmax(mask)), code) for mask, code in codes if bool(mask.any())]
    if not first:
        return True
    index, code = min(first)
    row = {**frame.row(index, named=True), "_row": index, "_problem": code}
    raise StrategyOutputError(rules.message(row, frame, universe))


_WEIGHT_FIELDS = ("ts", "symbol", "weight")
_ARROW_TS = pa.timestamp("us", tz="UTC")


def aligned_arrow(table: pa.Table, bars: pl.DataFrame, universe: set[str]) -> pl.DataFrame | None:
    """The validated weights of an Arrow ``table`` holding one weight per bar, in the bars' order.

    The common answer of a sandbox, checked on the table's buffers without converting it:
    its ``ts`` (µs, UTC) and ``symbol`` (strings) equal the bars' ones row by row, every
    weight is a finite float64 within the bound, no value is null. The frame returned
    shares the bars' ``ts`` and ``symbol`` columns; it equals what the general path
    returns. ``None`` (nothing checked) when any of this does not hold: the general path
    then checks the table and names the first bad row.
    """
    if not _plain_table(table, bars):
        return None
    ts, symbol, weight = (table.column(name).chunk(0) for name in _WEIGHT_FIELDS)
    layout = bars_layout(bars)
    aligned = (
        layout.sorted and set(layout.values) <= universe
        and np.array_equal(_values(ts, np.int64), layout.ts)
        and _all_small(_values(weight, np.float64), rules.MAX_ABS_WEIGHT)
        and _same_symbols(symbol, layout)
    )
    if not aligned:
        return None
    frame = pl.DataFrame([bars.get_column("ts"), bars.get_column("symbol"),
                          pl.Series("weight", weight)])
    mark_aligned(frame, bars)
    return frame


def _plain_table(table: pa.Table, bars: pl.DataFrame) -> bool:
    """One row per bar, exactly the weight columns in the bars' own types, one chunk each,
    no null."""
    if (table.num_rows == 0 or table.num_rows != bars.height
            or sorted(table.column_names) != sorted(_WEIGHT_FIELDS)):
        return False
    types = table.schema
    if (types.field("ts").type != _ARROW_TS or types.field("weight").type != pa.float64()
            or types.field("symbol").type not in (pa.large_string(), pa.string())):
        return False
    schema = bars.schema
    if schema.get("ts") != pl.Datetime("us", "UTC") or schema.get("symbol") != pl.String:
        return False
    return all(c.num_chunks == 1 and c.null_count == 0
               for c in (table.column(name) for name in _WEIGHT_FIELDS))


def _values(array: pa.Array, dtype: type[_Word]) -> npt.NDArray[_Word]:
    """The values of a fixed-width Arrow array without nulls, as a view of its buffer."""
    buffer = array.buffers()[1]
    assert buffer is not None
    return np.frombuffer(buffer, dtype=dtype, count=array.offset + len(array))[array.offset:]


def _same_symbols(array: pa.Array, layout: BarsLayout) -> bool:
    """Whether a string array holds the bars' symbols, compared block by block on its buffers."""
    offsets_buffer, data_buffer = array.buffers()[1:3]
    if offsets_buffer is None or data_buffer is None:
        return False
    wide = array.type == pa.large_string()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64 if wide else np.int32,
                            count=array.offset + len(array) + 1)[array.offset:]
    data = np.frombuffer(data_buffer, dtype=np.uint8)
    start = 0
    for symbol, length in zip(layout.values, layout.lengths.tolist(), strict=True):
        name = np.frombuffer(symbol.encode(), dtype=np.uint8)
        size = len(name)
        ends = offsets[start : start + length + 1]
        # Each row's string is exactly `size` bytes, one after the other...
        if size == 0 or not _steps_of(ends, size):
            return False
        first, last = int(ends[0]), int(ends[-1])
        if first < 0 or last > len(data):
            return False
        # ...and those bytes spell the symbol on every row.
        if not _repeats(data[first:last], name, length):
            return False
        start += length
    return True


def _steps_loop(ends: Any, size: int) -> bool:
    """Whether every step of ``ends`` is ``size``: one pass, no early exit (it vectorizes),
    no temporary; a difference is taken in 64 bits, so int32 offsets cannot wrap."""
    differ = 0
    for k in range(1, len(ends)):
        differ |= (ends[k] - ends[k - 1]) ^ size
    return differ == 0


_steps: list[Any] = []


def _steps_of(ends: npt.NDArray[np.generic], size: int) -> bool:
    """:func:`_steps_loop`, compiled by Numba (loaded from its cache) on first use."""
    if _numba is None:
        return bool((np.diff(ends.astype(np.int64)) == size).all())
    if not _steps:
        types: Any = _numba.types
        signatures = [types.boolean(types.Array(word, 1, "C", readonly=True), types.int64)
                      for word in (types.int32, types.int64)]
        _steps.append(_numba.njit(signatures, cache=True, nogil=True)(_steps_loop))
    return bool(_steps[0](ends, size))


_WORDS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def _repeats(data: npt.NDArray[np.uint8], name: npt.NDArray[np.uint8], times: int) -> bool:
    """Whether ``data`` is ``name`` repeated ``times`` times (``len(data)`` already matches)."""
    word = _WORDS.get(len(name))
    if word is not None:  # one word per row: a comparison with a scalar
        return bool((data.view(word) == name.view(word)[0]).all())
    return bool(np.array_equal(data, np.tile(name, times)))


def _all_small(weight: npt.NDArray[np.float64], bound: float) -> bool:
    """Every weight finite and within ``±bound``: two reductions, no mask arrays."""
    # NaN fails both comparisons; ±inf fails the bound.
    return bool(weight.max() <= bound) and bool(weight.min() >= -bound)


def _micros(ts: pl.Series) -> npt.NDArray[np.int64]:
    return micros(ts)


def _key_checks(
    values: list[str],
    lengths: npt.NDArray[np.int64],
    w_ts: npt.NDArray[np.int64],
    bars: tuple[list[str], npt.NDArray[np.int64], npt.NDArray[np.int64]],
    universe: set[str],
) -> tuple[BoolArray, BoolArray]:
    """Per row: symbol outside the universe; ``(ts, symbol)`` not a bar."""
    b_values, b_lengths, b_ts = bars
    n = len(w_ts)
    bad_symbol = np.zeros(n, dtype=np.bool_)
    if values == b_values and np.array_equal(lengths, b_lengths) and np.array_equal(w_ts, b_ts):
        for start, stop, symbol in _blocks(values, lengths):
            bad_symbol[start:stop] = symbol not in universe
        return bad_symbol, np.zeros(n, dtype=np.bool_)
    not_bar = np.ones(n, dtype=np.bool_)
    where = {s: (a, b) for a, b, s in _blocks(b_values, b_lengths)}
    for start, stop, symbol in _blocks(values, lengths):
        bad_symbol[start:stop] = symbol not in universe
        if symbol not in where:
            continue
        own = b_ts[slice(*where[symbol])]
        pos = np.minimum(np.searchsorted(own, w_ts[start:stop]), len(own) - 1)
        not_bar[start:stop] = own[pos] != w_ts[start:stop]
    return bad_symbol, not_bar


def _blocks(values: list[str], lengths: npt.NDArray[np.int64]) -> list[tuple[int, int, str]]:
    ends = np.cumsum(lengths)
    return [(int(e - n), int(e), s) for s, n, e in zip(values, lengths, ends, strict=True)]
