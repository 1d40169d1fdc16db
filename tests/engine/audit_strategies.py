"""Strategies for the lookahead audit tests: each a whole ``strategy.py``, one function ``s``.

The leaky ones read bars after the one they decide on, the way real research code does
by mistake; the honest ones decide at ``t`` from bars up to ``t`` only. All return valid
weights on the full frame (nulls filled), so the job itself would complete.
"""

from __future__ import annotations

HEADER = "import polars as pl\nimport pitwall\n\n\n@pitwall.vectorized\ndef s(bars):\n"


def _module(body: str) -> str:
    return HEADER + "".join(f"    {line}\n" for line in body.strip().splitlines())


LEAKY: dict[str, str] = {
    # z-score against the mean and std of the whole sample, future included
    "full_sample_zscore": _module("""
c = pl.col("close")
z = ((c - c.mean()) / c.std()).over("symbol")
return bars.select("ts", "symbol", weight=(z.clip(-2, 2) / 20).fill_null(0.0))
"""),
    # a moving average centred on t averages 10 bars after t
    "centered_rolling_mean": _module("""
c = pl.col("close")
ma = c.rolling_mean(21, center=True).over("symbol")
return bars.select("ts", "symbol", weight=((c - ma) / ma * 50).clip(-0.3, 0.3).fill_null(0.0))
"""),
    # tomorrow's (next bar's) close
    "next_close": _module("""
c = pl.col("close")
ret = (c.shift(-1) / c - 1).over("symbol")
return bars.select("ts", "symbol", weight=(ret * 100).clip(-0.3, 0.3).fill_null(0.0))
"""),
    # the highest close from t to the end of the data
    "future_max": _module("""
c = pl.col("close")
return bars.select("ts", "symbol", weight=(c / c.cum_max(reverse=True).over("symbol")) / 3)
"""),
    # prices normalised by their maximum over the whole run
    "global_max_normalisation": _module("""
c = pl.col("close")
return bars.select("ts", "symbol", weight=(c / c.max().over("symbol")) / 3)
"""),
}

HONEST: dict[str, str] = {
    "sma_crossover": _module("""
c = pl.col("close")
fast, slow = c.rolling_mean(10).over("symbol"), c.rolling_mean(40).over("symbol")
long = (fast > slow).fill_null(False).cast(pl.Float64)
return bars.select("ts", "symbol", weight=long / 3)
"""),
    "rolling_zscore": _module("""
c = pl.col("close")
z = ((c - c.rolling_mean(30)) / c.rolling_std(30)).over("symbol")
return bars.select("ts", "symbol", weight=(-z.clip(-2, 2) / 20).fill_null(0.0).fill_nan(0.0))
"""),
    "expanding_mean": _module("""
c = pl.col("close")
mean = (c.cum_sum() / c.cum_count()).over("symbol")
return bars.select("ts", "symbol", weight=pl.when(c > mean).then(0.3).otherwise(-0.1))
"""),
    "momentum": _module("""
c = pl.col("close")
mom = (c / c.shift(20) - 1).over("symbol")
return bars.select("ts", "symbol", weight=(mom * 20).clip(-0.3, 0.3).fill_null(0.0))
"""),
}
