"""SMA crossover: long a symbol while its fast moving average is above its slow one.

Equal weight across the symbols that are long; flat otherwise. The decision at bar t
uses closes up to and including t; Pitwall trades it at the open of bar t+1.
"""

import polars as pl

import pitwall


@pitwall.vectorized
def sma_crossover(bars: pl.DataFrame, fast: int = 30, slow: int = 240) -> pl.DataFrame:
    if not 0 < fast < slow:
        raise ValueError(f"need 0 < fast < slow, got fast={fast}, slow={slow}")
    signals = bars.with_columns(
        fast_ma=pl.col("close").rolling_mean(fast).over("symbol"),
        slow_ma=pl.col("close").rolling_mean(slow).over("symbol"),
    ).with_columns(
        long=(pl.col("fast_ma") > pl.col("slow_ma")).fill_null(False).cast(pl.Float64),
    )
    n_long = pl.col("long").sum().over("ts")
    return signals.select(
        "ts",
        "symbol",
        weight=pl.when(n_long > 0).then(pl.col("long") / n_long).otherwise(0.0),
    )
