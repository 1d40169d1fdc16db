"""Validation of the weights a strategy returned: untrusted input crossing into the engine.

Everything a sandbox returns is checked before the engine reads it: the exact schema
(safe casts only), finite weights within a leverage bound, known symbols, every
``(ts, symbol)`` on a bar of that symbol and given once, and a size bound. The error names
the *first* bad row, so a researcher can find it with ``weights[row]``.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl
import pyarrow as pa

from pitwall.engine.validate_fast import aligned_arrow, check_sorted_rows
from pitwall.engine.weight_rules import (
    BIG,
    DUPLICATE,
    INF,
    MAX_ABS_WEIGHT,
    NAN,
    NOT_BAR,
    NULL,
    SYMBOL,
    message,
)
from pitwall.errors import StrategyOutputError
from pitwall.strategy import WEIGHTS_SCHEMA

_INTEGER_TYPES = (
    pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64,
)


def validate_weights(
    weights: pl.DataFrame | pa.Table, bars: pl.DataFrame, universe: Iterable[str]
) -> pl.DataFrame:
    """Check a strategy's weights and return them as ``ts, symbol, weight`` (WEIGHTS_SCHEMA).

    A missing ``(ts, symbol)`` means "keep the previous target" (the engine forward-fills;
    before a symbol's first weight its target is 0). Raises
    :class:`~pitwall.errors.StrategyOutputError` naming the first bad row.

    Example
    -------
    >>> import datetime as dt, polars as pl
    >>> ts = dt.datetime(2024, 1, 2, 14, 31, tzinfo=dt.UTC)
    >>> bars = pl.DataFrame({"ts": [ts], "symbol": ["AAPL"]})
    >>> bad = pl.DataFrame({"ts": [ts], "symbol": ["AAPL"], "weight": [float("nan")]})
    >>> validate_weights(bad, bars, ["AAPL"])
    Traceback (most recent call last):
    ...
    pitwall.errors.StrategyOutputError: row 0: weight is NaN for AAPL at \
2024-01-02 14:31:00+00:00; return finite weights
    """
    if isinstance(weights, pa.Table):
        universe = set(universe)
        try:
            aligned = aligned_arrow(weights, bars, universe)
        except (ValueError, IndexError, pa.ArrowException):
            # An untrusted table whose buffers do not read as they claim: the general
            # path below checks it and names what is wrong.
            aligned = None
        if aligned is not None:  # one weight per bar, checked on the table's buffers
            return aligned
    frame = _as_frame(weights)
    if frame.height > bars.height:
        raise StrategyOutputError(
            f"the strategy returned {frame.height} weight rows but there are only "
            f"{bars.height} bars; return at most one weight per (ts, symbol) bar"
        )
    frame = _coerce_schema(frame)
    _check_rows(frame, bars, set(universe))
    return frame


def _as_frame(weights: object) -> pl.DataFrame:
    if isinstance(weights, pa.Table):
        result = pl.from_arrow(weights)
        if not isinstance(result, pl.DataFrame):  # pragma: no cover - a Table gives a frame
            raise StrategyOutputError("weights must be a table with columns ts, symbol, weight")
        return result
    if isinstance(weights, pl.DataFrame):
        return weights
    raise StrategyOutputError(
        f"weights must be a Polars DataFrame or an Arrow table, not {type(weights).__name__}; "
        "return a frame with columns ts, symbol, weight"
    )


def _coerce_schema(frame: pl.DataFrame) -> pl.DataFrame:
    """Exactly the columns of WEIGHTS_SCHEMA, cast only where no value can change."""
    expected = list(WEIGHTS_SCHEMA)
    missing = [c for c in expected if c not in frame.columns]
    extra = [c for c in frame.columns if c not in WEIGHTS_SCHEMA]
    if missing or extra:
        raise StrategyOutputError(
            f"weights must have exactly the columns {expected} "
            f"(missing {missing}, unexpected {extra}); select ts, symbol and weight"
        )
    return frame.select(_ts_column(frame), _symbol_column(frame), _weight_column(frame))


def _ts_column(frame: pl.DataFrame) -> pl.Expr:
    dtype = frame.schema["ts"]
    col = pl.col("ts")
    if dtype == pl.Null:
        return col.cast(WEIGHTS_SCHEMA["ts"])
    if not isinstance(dtype, pl.Datetime):
        raise StrategyOutputError(
            f"column ts has type {dtype}; return the bars' ts (Datetime('us', 'UTC'))"
        )
    if dtype.time_zone is None:
        raise StrategyOutputError(
            "column ts has no time zone; return the bars' ts, or use "
            ".dt.replace_time_zone('UTC') if your times are UTC"
        )
    if dtype.time_unit == "ns":
        sub_us = frame.select((col.dt.epoch("ns") % 1000 != 0).arg_true().first()).item()
        if sub_us is not None:
            raise StrategyOutputError(
                f"row {sub_us}: ts has a fraction of a microsecond; "
                "weights must be on the bars' timestamps"
            )
    # Converting the zone or the unit (ms/ns → µs, now lossless) keeps every instant.
    return col.dt.convert_time_zone("UTC").dt.cast_time_unit("us")


def _symbol_column(frame: pl.DataFrame) -> pl.Expr:
    dtype = frame.schema["symbol"]
    if dtype in (pl.String, pl.Null) or isinstance(dtype, pl.Categorical | pl.Enum):
        return pl.col("symbol").cast(pl.String)
    raise StrategyOutputError(f"column symbol has type {dtype}; return symbols as strings")


def _weight_column(frame: pl.DataFrame) -> pl.Expr:
    dtype = frame.schema["weight"]
    if dtype.is_float() or dtype == pl.Null or isinstance(dtype, _INTEGER_TYPES):
        return pl.col("weight").cast(pl.Float64)
    raise StrategyOutputError(f"column weight has type {dtype}; return weights as floats")


def _check_rows(frame: pl.DataFrame, bars: pl.DataFrame, universe: set[str]) -> None:
    """Find the first row failing any check; raise naming it."""
    if frame.height == 0:
        return
    if check_sorted_rows(frame, bars, universe):
        return
    keys = bars.select("ts", "symbol").with_columns(_is_bar=pl.lit(True))
    w = pl.col("weight")
    universe_list = pl.Series(sorted(universe), dtype=pl.String)
    problem = (
        pl.when(pl.any_horizontal(pl.col("ts", "symbol", "weight").is_null())).then(NULL)
        .when(w.is_nan()).then(NAN)
        .when(w.is_infinite()).then(INF)
        .when(w.abs() > MAX_ABS_WEIGHT).then(BIG)
        .when(~pl.col("symbol").is_in(universe_list.implode())).then(SYMBOL)
        .when(pl.col("_is_bar").is_null()).then(NOT_BAR)
        .when(~pl.struct("ts", "symbol").is_first_distinct()).then(DUPLICATE)
    )
    checked = (
        frame.with_row_index("_row")
        .join(keys, on=["ts", "symbol"], how="left", maintain_order="left")
        .with_columns(_problem=problem)
    )
    bad = checked.filter(pl.col("_problem").is_not_null()).head(1)
    if bad.height:
        row = bad.row(0, named=True)
        raise StrategyOutputError(message(row, checked, universe))
