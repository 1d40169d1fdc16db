"""``pitwall.backtest``: a quick run in the kernel on a small slice, no sandbox.

For iterating on an idea. The official run goes through the sandbox (``%%backtest``, the
Run Backtest button, or :class:`pitwall.Client`); both use the same trusted engine, so
the numbers agree for the same bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pitwall.models import Costs, Metrics

if TYPE_CHECKING:
    from collections.abc import Callable

    import polars as pl


@dataclass(frozen=True)
class LocalResult:
    """Weights, equity curve and metrics of a quick local run."""

    weights: pl.DataFrame
    equity: pl.DataFrame
    metrics: Metrics


def backtest(
    strategy: Callable[..., pl.DataFrame], bars: pl.DataFrame, *, capital: float = 1_000_000.0,
    costs: Costs | None = None, **params: Any,
) -> LocalResult:
    """Run a vectorized strategy on ``bars`` here, with the trusted engine's conventions.

    >>> import polars as pl, datetime as dt
    >>> ts = [dt.datetime(2024, 1, 2, 14, 30 + i, tzinfo=dt.UTC) for i in range(3)]
    >>> bars = pl.DataFrame({"ts": ts, "symbol": "A", "open": [10.0, 11.0, 12.0],
    ...                      "high": [11.0, 12.0, 13.0], "low": [9.0, 10.0, 11.0],
    ...                      "close": [10.5, 11.5, 12.5], "volume": [100, 100, 100]},
    ...                     schema_overrides={"ts": pl.Datetime("us", "UTC")})
    >>> def hold(bars): return bars.select("ts", "symbol", weight=pl.lit(1.0))
    >>> round(backtest(hold, bars).metrics.final_equity, 2)  # in at 11.0, marked at 12.5
    1136363.64
    """
    from pitwall.engine.execution import run_vectorized
    from pitwall.engine.metrics import compute_metrics
    from pitwall.engine.validate import validate_weights

    universe = bars.get_column("symbol").unique().to_list()
    weights = validate_weights(strategy(bars, **params), bars, universe)
    result = run_vectorized(bars, weights, capital=capital, costs=costs or Costs())
    return LocalResult(weights=weights, equity=result.equity, metrics=compute_metrics(result))
