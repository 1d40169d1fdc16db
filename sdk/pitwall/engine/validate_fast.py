"""The fast path of weight validation: weights already in the bars' ``(symbol, ts)`` order.

A strategy usually returns one weight per bar, or a subset, in the order of the bars it
read. Then no join is needed: rows sorted by ``(symbol, ts)`` with strictly increasing
``ts`` per symbol cannot repeat a key, and each symbol's timestamps are found among that
symbol's bars with one binary search (or one array comparison when the weights are
aligned one-to-one with the bars). The checks and the "first bad row" are the same as
the general path's; anything else (nulls, another order) goes to the general path.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import polars as pl

from pitwall.engine import weight_rules as rules
from pitwall.engine.grid import (
    bars_layout,
    is_grouped_sorted,
    mark_aligned,
    micros,
    symbol_blocks,
)
from pitwall.errors import StrategyOutputError

BoolArray = npt.NDArray[np.bool_]


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
