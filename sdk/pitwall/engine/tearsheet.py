"""The tear sheet of a run: the figures a researcher expects from pyfolio or quantstats.

Pure functions of daily returns (empyrical's conventions, as :mod:`.metrics`): return
statistics of the strategy and of its benchmark, benchmark-relative statistics, the
deepest drawdown periods (pyfolio's definition), annual and monthly returns, the return
distribution, best and worst days, historical VaR and CVaR. :func:`build_tearsheet`
adds the round trips, the per-symbol attribution and the cost breakdown
(:mod:`.trips`) and returns a :class:`~pitwall.models.TearSheet`, finite everywhere.
Conventions: docs/engine-conventions.md §4.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from pitwall.engine import metrics as m
from pitwall.engine import trips
from pitwall.engine.metrics import TRADING_DAYS, Returns
from pitwall.engine.vectorized import EngineResult
from pitwall.models import (
    BacktestSpec,
    DayReturn,
    DrawdownPeriod,
    Histogram,
    PeriodReturn,
    RelativeStats,
    ReturnStats,
    TearSheet,
    TearSheetHeader,
)

#: One-day historical VaR and CVaR at this cutoff (the 5% worst days).
VAR_CUTOFF = 0.05
#: Drawdown periods, best days and worst days listed.
TOP_DRAWDOWNS = 5
TOP_DAYS = 5
#: Bins of the return histogram.
HISTOGRAM_BINS = 40
#: Symbols of the universe named in the header (the count is always there).
MAX_UNIVERSE_SHOWN = 200


def value_at_risk(returns: Returns, cutoff: float = VAR_CUTOFF) -> float | None:
    """The ``cutoff`` percentile of the returns, interpolated linearly (empyrical's
    ``value_at_risk``: ``np.percentile(returns, 100·cutoff)``); None when empty."""
    if len(returns) == 0:
        return None
    return float(np.percentile(returns, 100 * cutoff))


def conditional_value_at_risk(returns: Returns, cutoff: float = VAR_CUTOFF) -> float | None:
    """The mean of the ``int((n − 1)·cutoff) + 1`` lowest returns (empyrical's
    ``conditional_value_at_risk``, the expected shortfall); None when empty."""
    if len(returns) == 0:
        return None
    k = int((len(returns) - 1) * cutoff)
    return float(np.mean(np.partition(returns, k)[: k + 1]))


def skew(returns: Returns) -> float | None:
    """Sample skewness with population moments (``scipy.stats.skew``, pyfolio); None
    under three returns or with zero dispersion."""
    centred = returns - np.mean(returns) if len(returns) else returns
    var = float(np.mean(centred**2)) if len(returns) > 2 else 0.0
    if var <= 0.0 or m._constant(returns):
        return None
    return m._finite(float(np.mean(centred**3)) / var**1.5)


def kurtosis(returns: Returns) -> float | None:
    """Excess kurtosis with population moments (``scipy.stats.kurtosis``, pyfolio); None
    under four returns or with zero dispersion."""
    centred = returns - np.mean(returns) if len(returns) else returns
    var = float(np.mean(centred**2)) if len(returns) > 3 else 0.0
    if var <= 0.0 or m._constant(returns):
        return None
    return m._finite(float(np.mean(centred**4)) / var**2 - 3.0)


def return_stats(returns: Returns, *, risk_free: float = 0.0,
                 cutoff: float = VAR_CUTOFF) -> ReturnStats:
    """:class:`ReturnStats` of daily returns (``risk_free`` per day, as in :mod:`.metrics`)."""
    empty = len(returns) == 0
    return ReturnStats(
        total_return=m.total_return(returns), cagr=m.cagr(returns),
        annual_volatility=m.annual_volatility(returns),
        sharpe=m.sharpe(returns, risk_free=risk_free),
        sortino=m.sortino(returns, required_return=risk_free),
        max_drawdown=m.max_drawdown(returns),
        best_day=None if empty else float(returns.max()),
        worst_day=None if empty else float(returns.min()),
        value_at_risk=value_at_risk(returns, cutoff),
        conditional_value_at_risk=conditional_value_at_risk(returns, cutoff),
        skew=skew(returns), kurtosis=kurtosis(returns),
    )


def tracking_error(returns: Returns, benchmark: Returns, *,
                   periods_per_year: int = TRADING_DAYS) -> float:
    """``std(r − b, ddof=1)·√252``: the annualised deviation of the active return (the
    denominator of empyrical's ``excess_sharpe``); 0.0 under two days or when constant."""
    active = returns - benchmark
    if len(active) < 2 or m._constant(active):
        return 0.0
    return m._finite(float(np.std(active, ddof=1)) * math.sqrt(periods_per_year))


def information_ratio(returns: Returns, benchmark: Returns, *,
                      periods_per_year: int = TRADING_DAYS) -> float | None:
    """``mean(r − b) / std(r − b, ddof=1)·√252``: empyrical's ``excess_sharpe`` (and
    quantstats' ``information_ratio``) annualised; None when the tracking error is 0."""
    active = returns - benchmark
    if len(active) < 2 or m._constant(active):
        return None
    ratio = float(np.mean(active)) / float(np.std(active, ddof=1))
    return m._finite(ratio * math.sqrt(periods_per_year))


def relative_stats(returns: Returns, benchmark: Returns, label: str, *,
                   risk_free: float = 0.0) -> RelativeStats:
    """Beta and alpha (:mod:`.metrics`), correlation, tracking error, information ratio
    and the annualised mean active return, against ``benchmark`` (same days)."""
    if len(benchmark) != len(returns):
        raise ValueError(f"benchmark has {len(benchmark)} daily returns, the run {len(returns)}")
    corr = None
    if len(returns) > 1 and not m._constant(returns) and not m._constant(benchmark):
        corr = m._finite(float(np.corrcoef(returns, benchmark)[0, 1]))
    active = returns - benchmark
    return RelativeStats(
        benchmark=label, beta=m.beta(returns, benchmark),
        alpha=m.alpha(returns, benchmark, risk_free=risk_free), correlation=corr,
        tracking_error=tracking_error(returns, benchmark),
        information_ratio=information_ratio(returns, benchmark),
        active_return=m._finite(float(np.mean(active)) * TRADING_DAYS) if len(active) else 0.0,
    )


def drawdown_periods(wealth: np.ndarray[Any, Any], days: list[dt.date],
                     top: int = TOP_DRAWDOWNS) -> list[DrawdownPeriod]:
    """The ``top`` deepest drawdowns of a wealth series, as pyfolio's ``get_top_drawdowns``.

    Repeatedly: the valley is the lowest point under water (the first one on ties), the
    peak the last point at the running maximum before it, the recovery the first point
    back at it after; a recovered period's inner points are dropped, an open one drops
    everything after its peak. Stops when nothing left is under water.
    """
    if len(wealth) == 0:
        return []
    under = wealth / np.maximum.accumulate(wealth) - 1.0
    alive = np.ones(len(wealth), dtype=bool)
    periods = []
    for _ in range(top):
        idx = np.flatnonzero(alive)
        if len(idx) == 0 or under[idx].min() >= 0.0:
            break
        valley = int(idx[np.argmin(under[idx])])
        before = idx[(idx <= valley) & (under[idx] == 0.0)]
        peak = int(before[-1])
        after = idx[(idx >= valley) & (under[idx] == 0.0)]
        recovery = int(after[0]) if len(after) else None
        periods.append(_period(wealth, days, peak, valley, recovery))
        if recovery is None:
            alive[peak + 1:] = False
        else:
            alive[peak + 1: recovery] = False
    return periods


def _period(wealth: np.ndarray[Any, Any], days: list[dt.date], peak: int, valley: int,
            recovery: int | None) -> DrawdownPeriod:
    end = recovery if recovery is not None else len(wealth)
    duration = None
    if recovery is not None:  # pd.date_range(peak, recovery, freq="B"): weekdays, inclusive
        duration = int(np.busday_count(days[peak], days[recovery] + dt.timedelta(days=1)))
    return DrawdownPeriod(
        peak=days[peak], valley=days[valley],
        recovery=days[recovery] if recovery is not None else None,
        depth=float(wealth[valley] / wealth[peak] - 1.0), duration_days=duration,
        days_underwater=int(end - peak - 1),
    )


def period_returns(returns: Returns, days: list[dt.date]) -> tuple[
        list[PeriodReturn], list[PeriodReturn]]:
    """Compounded returns of each calendar year and month (empyrical ``aggregate_returns``)."""
    frame = pl.DataFrame({"day": days, "r": returns}, schema={"day": pl.Date, "r": pl.Float64})
    frame = frame.with_columns(year=pl.col("day").dt.year(), month=pl.col("day").dt.month())
    compound = (pl.col("r") + 1.0).product() - 1.0
    years = frame.group_by("year", maintain_order=True).agg(compound.alias("ret"))
    months = frame.group_by("year", "month", maintain_order=True).agg(compound.alias("ret"))
    return ([PeriodReturn(year=y, ret=m._finite(r)) for y, r in years.iter_rows()],
            [PeriodReturn(year=y, month=mo, ret=m._finite(r)) for y, mo, r in months.iter_rows()])


def histogram(returns: Returns, bins: int = HISTOGRAM_BINS) -> Histogram:
    """Daily returns in ``bins`` equal bins between the lowest and the highest
    (``np.histogram``); one bin around the value when all are equal."""
    if len(returns) == 0:
        return Histogram()
    counts, edges = np.histogram(returns, bins=bins)
    return Histogram(edges=[float(e) for e in edges], counts=[int(c) for c in counts])


def extreme_days(returns: Returns, days: list[dt.date], n: int = TOP_DAYS) -> tuple[
        list[DayReturn], list[DayReturn]]:
    """The ``n`` best and ``n`` worst days (ties: the earlier day first)."""
    order = np.lexsort((np.arange(len(returns)), returns))  # ascending, stable
    worst = [DayReturn(day=days[i], ret=float(returns[i])) for i in order[:n]]
    best_order = np.lexsort((np.arange(len(returns)), -returns))
    best = [DayReturn(day=days[i], ret=float(returns[i])) for i in best_order[:n]]
    return best, worst


@dataclass(frozen=True)
class Benchmark:
    """The benchmark's daily returns on the run's days, and what it is."""

    label: str
    returns: Returns


def benchmark_for(result: EngineResult, bars: pl.DataFrame | None,
                  symbol: str | None) -> Benchmark | None:
    """Buy-and-hold of ``symbol`` (:func:`.metrics.benchmark_returns`, the one
    ``Metrics.beta`` uses), else of the universe in equal weight; None without bars."""
    if bars is None or result.equity.height == 0:
        return None
    days = m.trading_days(result)
    if symbol is not None:
        return Benchmark(symbol, m.benchmark_returns(bars, symbol, days))
    from pitwall.engine.charts import benchmark_equity

    value = benchmark_equity(bars, result.equity.get_column("ts"), result.capital)
    daily = value[m._day_ends(result)]
    previous = np.concatenate(([result.capital], daily[:-1]))
    return Benchmark("equal-weight universe", np.asarray(daily / previous - 1.0))


def header(result: EngineResult, manifest: dict[str, Any], benchmark: str,
           n_days: int) -> TearSheetHeader:
    """Strategy, parameters, universe, period and data of the run, from its manifest."""
    spec = spec_of(manifest)
    ts = result.equity.get_column("ts")
    first, last = (ts.min(), ts.max()) if len(ts) else (None, None)
    universe = list(spec.universe) if spec is not None else []
    params = spec.params if spec is not None and spec.params else manifest.get("parameters", {})
    data = manifest.get("data")
    recorded = manifest.get("universe")
    moved: dict[str, Any] = recorded if isinstance(recorded, dict) else {}
    return TearSheetHeader(
        strategy=_text(manifest.get("entrypoint")),
        bundle_sha256=_text(manifest.get("bundle_sha256")),
        params=dict(params) if isinstance(params, dict) else {},
        universe=universe[:MAX_UNIVERSE_SHOWN], n_symbols=len(universe),
        start=spec.start if spec else None, end=spec.end if spec else None,
        first_day=first.date() if isinstance(first, dt.datetime) else None,
        last_day=last.date() if isinstance(last, dt.datetime) else None,
        n_days=n_days, benchmark=benchmark, capital=result.capital,
        dataset=spec.dataset if spec else None,
        version=data.get("version") if isinstance(data, dict) else None,
        costs_preset=spec.costs_preset if spec else None,
        default_costs_preset=spec.default_costs_preset if spec else None,
        universe_rule=_text(moved.get("rule")),
        universe_evaluations=int(moved.get("evaluations", 0)),
        universe_entered=int(moved.get("entered", 0)), universe_left=int(moved.get("left", 0)),
    )


def spec_of(manifest: dict[str, Any]) -> BacktestSpec | None:
    """The spec recorded in a manifest, or None when it has none (or it does not validate)."""
    raw = manifest.get("spec")
    if not isinstance(raw, dict):
        return None
    try:
        return BacktestSpec.model_validate(raw)
    except ValueError:
        return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def build_tearsheet(result: EngineResult, *, manifest: dict[str, Any],
                    bars: pl.DataFrame | None = None, benchmark: str | None = None,
                    trades: pl.DataFrame | None = None,
                    positions: pl.DataFrame | None = None) -> TearSheet:
    """Every figure of the tear sheet of ``result`` (see the module docstring).

    ``manifest`` gives the header and the spec's costs and risk-free rate; ``bars`` the
    benchmark and the marks of open positions; ``trades`` the fills (round trips,
    attribution, costs) and ``positions`` the marks when there are no bars.
    """
    spec = spec_of(manifest)
    risk_free = spec.risk_free / TRADING_DAYS if spec is not None else 0.0
    returns = m.daily_returns(result)
    days = m.trading_days(result).to_list()
    bench = benchmark_for(result, bars, benchmark)
    wealth = np.concatenate(([1.0], np.cumprod(1.0 + returns))) if len(returns) else returns
    # The starting capital is a peak (as in metrics.max_drawdown), dated the first day.
    wealth_days = [days[0], *days] if days else []
    annual, monthly = period_returns(returns, days)
    best, worst = extreme_days(returns, days)
    accounts = trips.account(result, trades, costs=spec.costs if spec else None, bars=bars,
                             positions=positions)
    return TearSheet(
        header=header(result, manifest, bench.label if bench else "none", len(returns)),
        var_cutoff=VAR_CUTOFF,
        returns=return_stats(returns, risk_free=risk_free),
        benchmark=return_stats(bench.returns, risk_free=risk_free) if bench else None,
        relative=(relative_stats(returns, bench.returns, bench.label, risk_free=risk_free)
                  if bench else None),
        drawdowns=drawdown_periods(wealth, wealth_days),
        annual_returns=annual, monthly_returns=monthly, distribution=histogram(returns),
        best_days=best, worst_days=worst,
        round_trips=accounts.round_trips, n_round_trips=accounts.n_round_trips,
        round_trip_summary=accounts.summary, attribution=accounts.attribution,
        attribution_rest=accounts.attribution_rest,
        n_symbols_traded=accounts.n_symbols_traded, costs=accounts.costs,
        net_pnl=m._finite(result.final_equity - result.capital),
    )
