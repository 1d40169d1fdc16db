"""validate_weights: every rejection names the first bad row and says what to do."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from engine_bars import make_bars, make_weights, minute

from pitwall.engine import validate_weights
from pitwall.errors import StrategyOutputError

BARS = make_bars({"AAPL": [(1, 1)] * 3, "MSFT": [(1, 1), None, (1, 1)]})  # MSFT lacks bar 1
UNIVERSE = ["AAPL", "MSFT"]
GOOD = [(0, "AAPL", 0.5), (0, "MSFT", 0.5), (1, "AAPL", 1.0), (2, "MSFT", -0.25)]


def _with_row(row: int, replacement: tuple[int, str, float]) -> pl.DataFrame:
    rows = list(GOOD)
    rows[row] = replacement
    return make_weights(rows)


def _check(weights: object, message: str) -> None:
    with pytest.raises(StrategyOutputError) as info:
        validate_weights(weights, BARS, UNIVERSE)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_good_weights_pass_unchanged() -> None:
    out = validate_weights(make_weights(GOOD), BARS, UNIVERSE)
    assert out.equals(make_weights(GOOD))
    assert dict(out.schema) == {"ts": pl.Datetime("us", "UTC"), "symbol": pl.String,
                                "weight": pl.Float64}


def test_nan_weight() -> None:
    _check(_with_row(2, (1, "AAPL", float("nan"))),
           "row 2: weight is NaN for AAPL at 2024-01-02 14:31:00+00:00; return finite weights")


def test_infinite_weight() -> None:
    _check(_with_row(1, (0, "MSFT", float("-inf"))),
           "row 1: weight is -inf for MSFT at 2024-01-02 14:30:00+00:00; return finite weights")


def test_unknown_symbol_suggests_the_closest() -> None:
    _check(_with_row(3, (2, "APPL", 0.1)),
           "row 3: symbol 'APPL' is not in the universe; did you mean 'AAPL'?")


def test_ts_that_is_not_a_bar_of_that_symbol() -> None:
    _check(_with_row(3, (1, "MSFT", 0.1)),  # AAPL has bar 1, MSFT does not
           "row 3: 2024-01-02 14:31:00+00:00 is not a bar of MSFT; "
           "put weights only on the ts of that symbol's bars")
    between = make_weights(GOOD).with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.col("ts") + dt.timedelta(seconds=30))
        .otherwise(pl.col("ts")).alias("ts"))
    _check(between, "row 0: 2024-01-02 14:30:30+00:00 is not a bar of AAPL; "
                    "put weights only on the ts of that symbol's bars")


def test_duplicate_names_both_rows() -> None:
    _check(_with_row(2, (0, "AAPL", 0.3)),
           "row 2: a second weight for AAPL at 2024-01-02 14:30:00+00:00 (the first is row 0); "
           "give one weight per (ts, symbol)")


def test_wrong_types_are_rejected_and_safe_ones_cast() -> None:
    _check(make_weights(GOOD).with_columns(pl.col("weight").cast(pl.String)),
           "column weight has type String; return weights as floats")
    _check(make_weights(GOOD).with_columns(pl.col("symbol").hash()),
           "column symbol has type UInt64; return symbols as strings")
    _check(make_weights(GOOD).with_columns(pl.col("ts").dt.replace_time_zone(None)),
           "column ts has no time zone; return the bars' ts, or use "
           ".dt.replace_time_zone('UTC') if your times are UTC")
    _check(make_weights(GOOD).with_columns(pl.col("ts").dt.date()),
           "column ts has type Date; return the bars' ts (Datetime('us', 'UTC'))")
    safe = make_weights(GOOD).with_columns(
        pl.col("ts").dt.convert_time_zone("America/New_York").dt.cast_time_unit("ns"),
        pl.col("symbol").cast(pl.Categorical),
        pl.col("weight").cast(pl.Float32),
    )
    assert validate_weights(safe, BARS, UNIVERSE).equals(make_weights(GOOD))


def test_sub_microsecond_ts_is_not_truncated_onto_a_bar() -> None:
    ns = make_weights(GOOD).with_columns(pl.col("ts").dt.cast_time_unit("ns") +
                                         pl.duration(nanoseconds=pl.int_range(pl.len())))
    _check(ns, "row 1: ts has a fraction of a microsecond; weights must be on the bars' timestamps")


def test_first_bad_row_wins_across_checks() -> None:
    rows = list(GOOD)
    rows[1] = (0, "ZZZZ", 0.1)
    rows[3] = (2, "MSFT", float("nan"))
    _check(make_weights(rows),
           "row 1: symbol 'ZZZZ' is not in the universe; trade only the universe")


def test_null_leverage_shape_and_size() -> None:
    nulls = make_weights(GOOD).with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(None).otherwise(pl.col("symbol")).alias("symbol"))
    _check(nulls, "row 2: symbol is null; give every row a ts, a symbol and a weight")
    _check(_with_row(0, (0, "AAPL", 250.0)),
           "row 0: weight 250.0 for AAPL at 2024-01-02 14:30:00+00:00 is beyond ±100; "
           "return weights as fractions of equity")
    _check(make_weights(GOOD).drop("symbol").with_columns(sym=pl.lit("AAPL")),
           "weights must have exactly the columns ['ts', 'symbol', 'weight'] "
           "(missing ['symbol'], unexpected ['sym']); select ts, symbol and weight")
    too_many = make_weights(GOOD * 2)
    _check(too_many, "the strategy returned 8 weight rows but there are only 5 bars; "
                     "return at most one weight per (ts, symbol) bar")
    _check([1, 2, 3], "weights must be a Polars DataFrame or an Arrow table, not list; "
                      "return a frame with columns ts, symbol, weight")


def test_arrow_table_input() -> None:
    out = validate_weights(make_weights(GOOD).to_arrow(), BARS, UNIVERSE)
    assert out.equals(make_weights(GOOD))
    assert out.get_column("ts")[0] == minute(0)
