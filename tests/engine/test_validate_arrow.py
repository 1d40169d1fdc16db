"""validate_weights on an Arrow table with one weight per bar: the check on the table's
buffers (validate_fast.aligned_arrow) gives the general path's answer, or defers to it."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from engine_bars import random_walk_bars

from pitwall.engine import grid as grid_module
from pitwall.engine import validate_weights
from pitwall.engine.validate_fast import aligned_arrow
from pitwall.errors import StrategyOutputError

START = dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC)
# Names of 1, 2, 3 and 5 bytes (a word per row, or not) and one not ASCII.
SYMBOLS = ["A", "BB", "CCC", "DDDDD", "ÉÉ"]


def _bars() -> pl.DataFrame:
    return random_walk_bars(SYMBOLS, 50, start=START, seed=1, base=20.0, sigma=0.01)


def _weights(bars: pl.DataFrame) -> pl.DataFrame:
    rng = np.random.default_rng(2)
    return bars.select("ts", "symbol", weight=pl.Series(rng.normal(0, 0.2, bars.height)))


def _general(weights: pl.DataFrame, bars: pl.DataFrame) -> pl.DataFrame:
    """What the general path returns (a frame input never takes the Arrow check)."""
    return validate_weights(weights.clone(), bars, SYMBOLS)


@pytest.mark.parametrize("kind", ["large_string", "string", "sliced"])
def test_aligned_table_is_checked_on_its_buffers(kind: str) -> None:
    bars = _bars()
    weights = _weights(bars)
    table = weights.to_arrow()
    if kind == "string":
        table = table.cast(pa.schema([("ts", pa.timestamp("us", "UTC")), ("symbol", pa.string()),
                                      ("weight", pa.float64())]))
    if kind == "sliced":  # buffers that start before the table's first row
        table = pa.concat_tables([table.slice(0, 7), table]).combine_chunks().slice(7)
    out = aligned_arrow(table, bars, set(SYMBOLS))
    assert out is not None
    assert grid_module._is_aligned(out, bars)  # the engine reads the weights as they are
    assert out.equals(_general(weights, bars))
    assert validate_weights(table, bars, SYMBOLS).equals(out)


@pytest.mark.parametrize(
    "edit",
    [
        pl.lit("A"),  # same bytes in all, split differently from the bars' rows
        pl.lit("CCD"),  # same length, another name
        pl.lit("BBB"),  # another length
    ],
)
def test_a_changed_symbol_goes_to_the_general_path(edit: pl.Expr) -> None:
    bars = _bars()
    row = 120  # a row of "CCC"
    weights = _weights(bars).with_columns(
        symbol=pl.when(pl.int_range(pl.len()) == row).then(edit).otherwise(pl.col("symbol")))
    table = weights.to_arrow()
    assert aligned_arrow(table, bars, set(SYMBOLS)) is None
    with pytest.raises(StrategyOutputError) as fast:
        validate_weights(table, bars, SYMBOLS)
    with pytest.raises(StrategyOutputError) as general:
        _general(weights, bars)
    assert str(fast.value) == str(general.value)
    assert str(fast.value).startswith(f"row {row}:")


def test_tables_the_check_does_not_take() -> None:
    bars = _bars()
    weights = _weights(bars)
    table = weights.to_arrow()
    two_chunks = pa.concat_tables([table.slice(0, 10), table.slice(10)])
    not_utc = weights.with_columns(pl.col("ts").dt.convert_time_zone("Europe/Paris")).to_arrow()
    float32 = weights.with_columns(pl.col("weight").cast(pl.Float32)).to_arrow()
    nan = weights.with_columns(
        weight=pl.when(pl.int_range(pl.len()) == 3).then(float("nan")).otherwise("weight"))
    for other in (two_chunks, not_utc, float32, table.slice(1)):
        assert aligned_arrow(other, bars, set(SYMBOLS)) is None
        expected = _general(pl.from_arrow(other), bars)  # type: ignore[arg-type]
        assert validate_weights(other, bars, SYMBOLS).equals(expected)
    assert aligned_arrow(table, bars, set(SYMBOLS[:-1])) is None  # a symbol outside
    with pytest.raises(StrategyOutputError, match="row 3: weight is NaN"):
        validate_weights(nan.to_arrow(), bars, SYMBOLS)
