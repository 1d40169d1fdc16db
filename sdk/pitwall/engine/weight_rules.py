"""The checks every weight row must pass, and the sentences that name a failure.

Shared by the general validation path (``validate.py``) and the sorted fast path
(``validate_fast.py``), so both report the same first bad row in the same words.
"""

from __future__ import annotations

import difflib

import polars as pl

# No sensible strategy puts more than 100× its equity in one symbol; a bound keeps the
# accounting finite (and the cost equation solvable) whatever a strategy returns.
MAX_ABS_WEIGHT = 100.0

# Row checks in the order they are reported when one row fails several.
NULL, NAN, INF, BIG, SYMBOL, NOT_BAR, DUPLICATE = range(7)


def message(row: dict[str, object], checked: pl.DataFrame, universe: set[str]) -> str:
    """The sentence naming ``row``'s first failed check and what to do about it."""
    index, code = row["_row"], row["_problem"]
    ts, symbol, weight = row["ts"], row["symbol"], row["weight"]
    where = f"for {symbol} at {ts}"
    if code == NULL:
        column = next(c for c in ("ts", "symbol", "weight") if row[c] is None)
        return f"row {index}: {column} is null; give every row a ts, a symbol and a weight"
    if code in (NAN, INF):
        kind = "NaN" if code == NAN else str(weight)
        return f"row {index}: weight is {kind} {where}; return finite weights"
    if code == BIG:
        return (
            f"row {index}: weight {weight} {where} is beyond ±{MAX_ABS_WEIGHT:g}; "
            "return weights as fractions of equity"
        )
    if code == SYMBOL:
        close = difflib.get_close_matches(str(symbol), sorted(universe), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; trade only the universe"
        return f"row {index}: symbol {symbol!r} is not in the universe{hint}"
    if code == NOT_BAR:
        return (
            f"row {index}: {ts} is not a bar of {symbol}; "
            "put weights only on the ts of that symbol's bars"
        )
    first = checked.filter((pl.col("ts") == ts) & (pl.col("symbol") == symbol)).item(0, "_row")
    return (
        f"row {index}: a second weight {where} (the first is row {first}); "
        "give one weight per (ts, symbol)"
    )
