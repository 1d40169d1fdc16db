"""The trusted vectorized engine: fills, costs and the equity path, computed on the grid.

Conventions (derived step by step in ``docs/engine-conventions.md``):

* the target ``w(t)``, decided with data up to bar ``t``'s close, is executed at the open
  of bar ``t+1``; the portfolio starts in cash and the targets of the last bar are never
  executed;
* at every open the portfolio is rebalanced to the target (constant mix), paying
  ``(commission_bps + slippage_bps) / 1e4`` of the traded notional; afterwards it holds
  exactly the target weights of its *post-cost* equity; cash earns nothing;
* a symbol without a bar at ``t`` keeps its position (no trade) at its last close;
* equity is marked at every close.

With ``h`` the held weights, ``g = open(t+1)/open(t) − 1`` and ``k`` the post-cost
fraction of equity kept at the open, post-trade equity ``P`` follows
``P(t) = P(t−1) · (1 + h(t−1)·g(t−1)) · k(t)`` — a cumulative product, no loop over bars.
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass

import numpy as np
import polars as pl

from pitwall.engine.charges import borrow_fraction, cost_rate, limit_leverage
from pitwall.engine.corporate import (
    CorporateActions,
    CorporatePlan,
    CorporateReport,
    plan,
    relabel,
    relabel_actions,
)
from pitwall.engine.fill_rules import FillRules, LiquidityStats
from pitwall.engine.fills import Path, compiled_path, simulate
from pitwall.engine.grid import BarGrid, build_grid, target_grid
from pitwall.engine.ledger import Ledger, positions, trades
from pitwall.engine.liquidity import liquidity_inputs, simulate_liquidity
from pitwall.engine.threshold import simulate_threshold
from pitwall.errors import DataError
from pitwall.models import Costs, Execution


@dataclass(frozen=True, eq=False)
class EngineResult:
    """What the engine measured.

    ``equity`` has one row per bar timestamp: ``ts``, ``equity`` (marked at the close),
    ``gross_exposure`` and ``net_exposure`` (positions / equity at the close),
    ``turnover`` (notional traded at the open / equity before the trade) and ``cost``
    (currency paid at the open). ``n_trades`` counts the ``(bar, symbol)`` rebalances
    larger than ``TRADE_EPSILON`` of equity. ``leverage_clipped_bars`` counts the bars
    whose targets were scaled down to the leverage limits. ``liquidity`` says what the
    fill model did (capped fills, carried notional, skipped trades, impact cost), ``None``
    when it was off. :meth:`trades` and :meth:`positions` build the per-symbol frames on
    demand.
    """

    equity: pl.DataFrame
    capital: float
    n_trades: int
    total_cost: float
    leverage_clipped_bars: int = 0
    ledger: Ledger | None = None
    liquidity: LiquidityStats | None = None
    corporate: CorporateReport | None = None  # what corporate actions did (None: not given)

    def trades(self) -> pl.DataFrame:
        """``ts, symbol, qty, price, notional, cost`` for every (bar, symbol) that traded."""
        if self.ledger is None:
            raise ValueError("this result carries no ledger; run it with run_vectorized")
        return trades(self.ledger)

    def positions(self) -> pl.DataFrame:
        """``ts, symbol, qty, price, value, weight`` for every (bar, symbol) held at the close."""
        if self.ledger is None:
            raise ValueError("this result carries no ledger; run it with run_vectorized")
        return positions(self.ledger)

    @property
    def final_equity(self) -> float:
        """Equity at the last close."""
        return float(self.equity.get_column("equity")[-1])


def run_vectorized(
    bars: pl.DataFrame,
    weights: pl.DataFrame,
    *,
    capital: float,
    costs: Costs,
    execution: Execution | None = None,
    corporate: CorporateActions | None = None,
) -> EngineResult:
    """Execute target weights on bars and mark the portfolio at every close.

    ``weights`` should be the output of :func:`pitwall.engine.validate_weights`. See the
    module docstring for the conventions. ``execution`` sets leverage limits (clipped or
    refused with :class:`~pitwall.errors.StrategyOutputError`), a rebalance threshold and
    the fill model (participation cap, lots, minimum notional; with
    ``costs.impact_coefficient``, market impact), which runs a bar-by-bar pass.
    ``corporate`` applies splits, dividends, delistings and renames to the unadjusted bars
    (``pitwall.engine.corporate``, docs/reference-data.md) and reports them in ``corporate``.

    Example
    -------
    >>> import datetime as dt, polars as pl
    >>> from pitwall.models import Costs
    >>> ts = [dt.datetime(2024, 1, 2, 14, 30 + i, tzinfo=dt.UTC) for i in range(3)]
    >>> bars = pl.DataFrame({"ts": ts, "symbol": ["A"] * 3, "open": [10.0, 10.0, 11.0],
    ...                      "close": [10.0, 11.0, 11.0]})
    >>> w = pl.DataFrame({"ts": ts[:1], "symbol": ["A"], "weight": [1.0]})
    >>> round(run_vectorized(bars, w, capital=100.0, costs=Costs()).final_equity, 9)
    110.0
    """
    if not capital > 0 or not np.isfinite(capital):
        raise ValueError(f"capital must be a positive number, got {capital}")
    execution = execution or Execution()
    # --- corporate actions (docs/reference-data.md): renamed securities keyed by their
    # last symbol; the recursion below runs on split/dividend-adjusted prices ---
    actions: CorporatePlan | None = None
    if corporate is not None:
        corporate = relabel_actions(corporate)
        bars, weights = relabel(bars, corporate), relabel(weights, corporate)
    grid = build_grid(bars)
    rules = FillRules.from_spec(costs, execution)
    sequential = (execution.rebalance_threshold > 0 or rules.active) and grid.shape[1] > 1
    if sequential or grid.shape[1] == 1 or not compiled_path():
        _check_prices(grid)  # otherwise the compiled pass checks them on its way
    limited = limit_leverage(grid, target_grid(grid, bars, weights), execution)
    rate = cost_rate(grid, bars, costs)
    borrow = borrow_fraction(grid, costs)
    if corporate is not None:  # --- corporate actions ---
        actions = plan(grid, corporate)
        grid = actions.grid
        limited = dataclasses.replace(limited, target=actions.close_delisted(limited.target))
    stats: LiquidityStats | None = None
    path: Path
    if rules.active and sequential:
        path, stats = simulate_liquidity(
            grid, limited.target, rate=rate, borrow=borrow,
            threshold=execution.rebalance_threshold,
            liquidity=(actions.liquidity(liquidity_inputs(grid, bars, rules, capital))
                       if actions is not None else liquidity_inputs(grid, bars, rules, capital)))
    elif sequential:
        path = simulate_threshold(grid, limited.target, rate=rate, borrow=borrow,
                                  threshold=execution.rebalance_threshold)
    else:
        path = simulate(grid, limited.target, rate=rate, borrow=borrow)
    if actions is not None:  # --- corporate actions: the ledger shows the raw prices ---
        path = actions.with_trades(path, limited.target[:, :-1], rate)
        grid = actions.raw
    ledger = Ledger(grid=grid, executed=limited.target[:, :-1], path=path, rate=rate,
                    capital=capital,
                    lot=execution.lot_size if path.trades is not None and actions is None
                    else None)
    result = _result(ledger, clipped=limited.clipped_bars, liquidity=stats)
    if actions is None:
        return result
    return dataclasses.replace(result, corporate=actions.report(path, capital))


def _check_prices(grid: BarGrid) -> None:
    """Prices are trusted data, but a zero or NaN price would poison every later mark."""
    if grid.cells is None:
        # min > 0 is False for NaN; a finite sum rules out inf. Both are single cheap passes.
        ok = all(p.min() > 0 and np.isfinite(p.sum()) for p in (grid.open, grid.close))
    else:
        o, c = grid.open[grid.present], grid.close[grid.present]
        ok = bool((o > 0).all() and (c > 0).all() and np.isfinite(o.sum() + c.sum()))
    if not ok:
        raise DataError("bars hold a non-positive or non-finite price; fix the dataset")


def _result(ledger: Ledger, *, clipped: int, liquidity: LiquidityStats | None) -> EngineResult:
    """Scale the unit path by the capital and label it with the bars' timestamps."""
    grid, path, capital = ledger.grid, ledger.path, ledger.capital
    cost = np.multiply(capital, path.pre)  # × the fee in place: one temporary, same numbers
    np.multiply(cost, path.fee if path.fee is not None else 0.0, out=cost)
    # A list of Series (each a view of its array) builds faster than a dict of arrays.
    equity = pl.DataFrame([
        _ts_column(grid),
        pl.Series("equity", capital * path.close),
        pl.Series("gross_exposure", path.gross),
        pl.Series("net_exposure", path.net),
        pl.Series("turnover", path.turnover),
        pl.Series("cost", cost),
    ])
    return EngineResult(
        equity=equity, capital=capital, n_trades=path.n_trades, total_cost=float(cost.sum()),
        leverage_clipped_bars=clipped, ledger=ledger, liquidity=liquidity,
    )


# The ts column of the last grid labelled: the grid is kept per bars frame
# (grid.bars_layout), so the runs of a sweep, or a job's repeated runs, share one column
# instead of copying the timestamps each time. Polars columns are immutable (shared
# buffers are copied on write), so sharing it between results is safe.
_LAST_TS: list[tuple[weakref.ref[BarGrid], pl.Series]] = []


def _ts_column(grid: BarGrid) -> pl.Series:
    """``grid.ts`` as the ``ts`` column of a result, ``Datetime("us", "UTC")``."""
    for ref, column in list(_LAST_TS):  # a copy: another thread may replace it
        if ref() is grid:
            return column
    column = pl.Series("ts", grid.ts, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))
    _LAST_TS[:] = [(weakref.ref(grid, _forget_ts), column)]
    return column


def _forget_ts(ref: weakref.ref[BarGrid]) -> None:
    """The grid is gone: drop its column."""
    if _LAST_TS and _LAST_TS[0][0] is ref:
        _LAST_TS.clear()
