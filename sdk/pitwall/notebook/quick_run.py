"""``pitwall.backtest``: a quick run in the kernel on a small slice, no sandbox.

For iterating on an idea. The official run goes through the sandbox (``%%backtest``, the
Run Backtest button, or :class:`pitwall.Client`); both use the same trusted engine, so
the numbers agree for the same bars. Like the official run, a quick run re-runs the
strategy on the data cut at a few points (the lookahead audit,
:mod:`pitwall.engine.audit`) and reports whether its weights changed; ``audit=False``
skips it. Before every call of the strategy, ``random`` and NumPy's global generator are
seeded with ``seed`` (as in the sandbox), so a strategy that draws random numbers gives
the same weights on every call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pitwall.models import Costs, LookaheadAudit, Metrics

if TYPE_CHECKING:
    from collections.abc import Callable

    import polars as pl

    from pitwall.engine.corporate import CorporateActions
    from pitwall.event_strategy import Strategy


@dataclass(frozen=True)
class LocalResult:
    """Weights (vectorized) or trades (event-driven), equity curve and metrics of a quick
    local run."""

    weights: pl.DataFrame | None  # None for an event-driven strategy: it places orders
    equity: pl.DataFrame
    metrics: Metrics  # ``metrics.lookahead`` holds the audit's verdict when it ran
    audit: LookaheadAudit | None = None
    trades: pl.DataFrame | None = None  # the broker's fills, of an event-driven run

    @property
    def verdict(self) -> str:
        """The lookahead audit's verdict in one sentence."""
        from pitwall.engine.audit import describe

        return describe(self.audit) if self.audit is not None else "lookahead audit skipped"

    def __str__(self) -> str:
        from pitwall.engine.report import format_metrics

        rows = format_metrics(self.metrics)
        width = max((len(label) for label, _ in rows), default=0)
        return "\n".join([*(f"{label:<{width}}  {text}" for label, text in rows), self.verdict])


def backtest(
    strategy: Callable[..., pl.DataFrame] | type[Strategy], bars: pl.DataFrame, *,
    capital: float = 1_000_000.0, costs: Costs | None = None, audit: bool = True,
    seed: int = 0, corporate: CorporateActions | None = None, **params: Any,
) -> LocalResult:
    """Run a vectorized strategy on ``bars`` here, with the trusted engine's conventions.

    A :class:`pitwall.Strategy` subclass (event-driven) runs bar by bar with the trusted
    broker instead (:func:`pitwall.events.run_local`, symbols in sorted order: list the
    official run's universe sorted too). Its result has ``trades`` and no weights, and no
    audit: an official event run is point-in-time by construction.

    ``corporate`` (``client.reference(dataset, version)``) applies the version's splits,
    dividends, delistings and renames as the job does, and gives the strategy the
    point-in-time ``adj_*`` columns when ``bars`` lack them (docs/reference-data.md).

    With ``audit`` (the default) the strategy is also re-run on the bars cut at a few
    timestamps and its weights compared (:func:`pitwall.engine.audit.audit_weights`); the
    verdict is ``result.audit`` (also ``result.metrics.lookahead``), in one sentence
    ``result.verdict``, and printed by ``print(result)``.

    >>> import polars as pl, datetime as dt
    >>> ts = [dt.datetime(2024, 1, 2, 14, 30 + i, tzinfo=dt.UTC) for i in range(3)]
    >>> bars = pl.DataFrame({"ts": ts, "symbol": "A", "open": [10.0, 11.0, 12.0],
    ...                      "high": [11.0, 12.0, 13.0], "low": [9.0, 10.0, 11.0],
    ...                      "close": [10.5, 11.5, 12.5], "volume": [100, 100, 100]},
    ...                     schema_overrides={"ts": pl.Datetime("us", "UTC")})
    >>> def hold(bars): return bars.select("ts", "symbol", weight=pl.lit(1.0))
    >>> result = backtest(hold, bars)
    >>> round(result.metrics.final_equity, 2)  # in at 11.0, marked at 12.5
    1136363.64
    >>> result.audit.status  # three bars: too few to cut
    'not_run'
    """
    from pitwall.engine.metrics import compute_metrics
    from pitwall.engine.validate import validate_weights
    from pitwall.engine.vectorized import run_vectorized
    from pitwall.sandbox.loader import seed_everything

    if corporate is not None and "adj_close" not in bars.columns:
        from pitwall.reference import with_adjusted

        bars = with_adjusted(bars, corporate.actions)
    if isinstance(strategy, type):
        seed_everything(seed)  # as the sandbox seeds before it starts the strategy
        return _event_backtest(strategy, bars, capital=capital, costs=costs, params=params,
                               corporate=corporate)

    def call(frame: pl.DataFrame) -> Any:
        seed_everything(seed)
        return strategy(frame, **params)

    universe = _symbols(bars)
    weights = validate_weights(call(bars), bars, universe)
    result = run_vectorized(bars, weights, capital=capital, costs=costs or Costs(),
                            corporate=corporate)
    metrics = compute_metrics(result)
    verdict = _audit(call, bars, weights, universe) if audit else None
    if verdict is not None:
        metrics = metrics.model_copy(update={"lookahead": verdict})
    return LocalResult(weights=weights, equity=result.equity, metrics=metrics, audit=verdict)


def _event_backtest(strategy: type[Strategy], bars: pl.DataFrame, *, capital: float,
                    costs: Costs | None, params: dict[str, Any],
                    corporate: CorporateActions | None) -> LocalResult:
    """An event-driven strategy's quick run: the event engine's own local runner."""
    from pitwall.engine.metrics import compute_metrics
    from pitwall.notebook.event_quick_run import run_local

    result = run_local(strategy, bars, params, capital=capital, costs=costs,
                       corporate=corporate)
    return LocalResult(weights=None, equity=result.equity, metrics=compute_metrics(result),
                       trades=result.trades())


def _symbols(bars: pl.DataFrame) -> list[str]:
    """The bars' symbols: read off their layout when sorted (validation and the engine
    reuse it), else a hash of the column."""
    import polars as pl

    from pitwall.engine.grid import BAR_COLUMNS, bars_layout

    if bars.height and bars.schema.get("symbol") == pl.String and bars.schema.get(
            "ts") == BAR_COLUMNS["ts"]:
        layout = bars_layout(bars)
        if layout.sorted:
            return list(layout.values)
    return bars.get_column("symbol").unique().to_list()


def _audit(call: Callable[[pl.DataFrame], Any], bars: pl.DataFrame, weights: pl.DataFrame,
           universe: list[str]) -> LookaheadAudit:
    """Re-run on ``bars[ts <= cut]`` at cuts drawn like an official run's, and compare.

    Here the re-runs share the kernel's process with the full run, so the verdict says
    that state cached across calls was not ruled out (an official run's re-runs are
    fresh processes in the sandbox).
    """
    import secrets

    import polars as pl

    from pitwall.engine.audit import audit_weights
    from pitwall.engine.audit_cuts import plan_cuts

    plan = plan_cuts(bars, seed=secrets.randbits(63))
    outputs: list[Any] = []
    for cut in plan.cuts:
        try:
            out = call(bars.filter(pl.col("ts") <= cut.at))
        except Exception as exc:  # a re-run that raises is a note, not a failed run
            outputs.append(f"{type(exc).__name__}: {str(exc)[:500]}")
            continue
        outputs.append(out.to_arrow() if isinstance(out, pl.DataFrame) else
                       f"the re-run returned {type(out).__name__}, not a polars DataFrame")
    return audit_weights(bars, weights, plan, outputs, universe, independent=False)
