"""Performance metrics with the conventions of empyrical, always finite (JSON-safe).

The pure functions take a NumPy array of *daily* simple returns and agree with empyrical
(``empyrical.sharpe_ratio`` and friends) wherever empyrical returns a finite number.
Where empyrical returns NaN or ±inf (fewer than two days, zero dispersion, no downside),
they return the documented finite value instead, because metrics are stored as JSON.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from pitwall.engine.fills import _numba
from pitwall.engine.grid import _address, micros
from pitwall.engine.vectorized import EngineResult
from pitwall.errors import DataError
from pitwall.models import BacktestSpec, Metrics

Returns = npt.NDArray[np.float64]

TRADING_DAYS = 252


def total_return(returns: Returns) -> float:
    """Compounded return of the whole series (``empyrical.cum_returns_final``); 0.0 if empty."""
    if len(returns) == 0:
        return 0.0
    return _finite(float(np.prod(1.0 + returns)) - 1.0)


def cagr(returns: Returns, *, periods_per_year: int = TRADING_DAYS) -> float:
    """``ending_value ** (1 / years) − 1`` with ``years = len / periods_per_year`` (empyrical).

    0.0 for an empty series; −1.0 when the equity is wiped out.
    """
    if len(returns) == 0:
        return 0.0
    ending = float(np.prod(1.0 + returns))
    if ending <= 0.0:
        return -1.0
    years = len(returns) / periods_per_year
    # log space avoids an OverflowError for a short, wild series; _finite caps the result.
    with np.errstate(over="ignore"):
        return _finite(float(np.expm1(np.log(ending) / years)))


def annual_volatility(returns: Returns, *, periods_per_year: int = TRADING_DAYS) -> float:
    """Sample standard deviation (ddof=1) × √periods_per_year; 0.0 under two returns."""
    if len(returns) < 2 or _constant(returns):
        return 0.0
    return _finite(float(np.std(returns, ddof=1)) * math.sqrt(periods_per_year))


def sharpe(
    returns: Returns, *, risk_free: float = 0.0, periods_per_year: int = TRADING_DAYS
) -> float:
    """Annualised Sharpe ratio; ``risk_free`` is per period (daily), as in empyrical.

    0.0 when it is undefined: fewer than two returns, or zero dispersion.
    """
    excess = returns - risk_free
    if len(excess) < 2 or _constant(excess):
        return 0.0
    ratio = float(np.mean(excess)) / float(np.std(excess, ddof=1))
    return _finite(ratio * math.sqrt(periods_per_year))


def downside_risk(
    returns: Returns, *, required_return: float = 0.0, periods_per_year: int = TRADING_DAYS
) -> float:
    """√mean(min(r − required, 0)²) × √periods_per_year (empyrical's downside deviation)."""
    if len(returns) == 0:
        return 0.0
    shortfall = np.minimum(returns - required_return, 0.0)
    return _finite(math.sqrt(float(np.mean(shortfall**2))) * math.sqrt(periods_per_year))


def sortino(
    returns: Returns, *, required_return: float = 0.0, periods_per_year: int = TRADING_DAYS
) -> float:
    """Annualised mean excess return / :func:`downside_risk` (empyrical's Sortino ratio).

    0.0 when it is undefined: fewer than two returns, or no return below ``required_return``.
    """
    risk = downside_risk(returns, required_return=required_return,
                         periods_per_year=periods_per_year)
    if len(returns) < 2 or risk == 0.0:
        return 0.0
    mean_excess = float(np.mean(returns - required_return)) * periods_per_year
    return _finite(mean_excess / risk)


def max_drawdown(returns: Returns) -> float:
    """Largest peak-to-trough fall of compounded returns, as a negative fraction (empyrical).

    The starting value counts as a peak, so a loss on the first day is a drawdown.
    0.0 for an empty or never-falling series.
    """
    if len(returns) == 0:
        return 0.0
    wealth = np.concatenate(([1.0], np.cumprod(1.0 + returns)))
    peak = np.maximum.accumulate(wealth)
    with np.errstate(divide="ignore", invalid="ignore"):
        drawdown = np.where(peak > 0, wealth / peak - 1.0, -1.0)
    return _finite(float(drawdown.min()))


def calmar(returns: Returns, *, periods_per_year: int = TRADING_DAYS) -> float:
    """:func:`cagr` / ``|max_drawdown|`` (empyrical ``calmar_ratio``); 0.0 without a drawdown."""
    drawdown = max_drawdown(returns)
    if drawdown >= 0.0:
        return 0.0
    return _finite(cagr(returns, periods_per_year=periods_per_year) / abs(drawdown))


def max_drawdown_days(returns: Returns) -> int:
    """The longest run of consecutive days that closed below the previous peak.

    A drawdown still open on the last day counts up to that day. The starting capital
    is a peak (as in :func:`max_drawdown`). 0 for a series that never falls.
    """
    if len(returns) == 0:
        return 0
    wealth = np.concatenate(([1.0], np.cumprod(1.0 + returns)))
    peak_day = np.maximum.accumulate(
        np.where(wealth >= np.maximum.accumulate(wealth), np.arange(len(wealth)), 0)
    )
    # Days since the last peak; its maximum is the longest stretch under water.
    return int((np.arange(len(wealth)) - peak_day).max())


def win_rate(returns: Returns) -> float:
    """Share of days with a positive return among the days with a non-zero one (0.0 if none)."""
    moved = returns[returns != 0.0]
    return float(np.mean(moved > 0.0)) if len(moved) else 0.0


def profit_factor(returns: Returns) -> float:
    """Σ positive daily returns / |Σ negative daily returns|.

    0.0 with no positive day; ``+inf`` with gains and no losing day (``Metrics`` stores
    that as ``None``, JSON ``null``: JSON has no infinity).
    """
    gains = float(returns[returns > 0.0].sum())
    losses = -float(returns[returns < 0.0].sum())
    if gains == 0.0:
        return 0.0
    return _finite(gains / losses) if losses > 0.0 else math.inf


def beta(returns: Returns, benchmark: Returns) -> float:
    """``cov(r, b) / var(b)`` with population moments (empyrical ``beta``); 0.0 if undefined."""
    if len(returns) < 2:
        return 0.0
    residual = benchmark - np.mean(benchmark)
    variance = float(np.mean(residual**2))
    if variance < 1e-30:
        return 0.0
    return _finite(float(np.mean(residual * returns)) / variance)


def alpha(
    returns: Returns,
    benchmark: Returns,
    *,
    risk_free: float = 0.0,
    periods_per_year: int = TRADING_DAYS,
) -> float:
    """Annualised Jensen's alpha (empyrical).

    ``(1 + mean((r − rf) − β·(b − rf))) ** periods_per_year − 1``; 0.0 under two returns.
    """
    if len(returns) < 2:
        return 0.0
    b = beta(returns, benchmark)
    series = (returns - risk_free) - b * (benchmark - risk_free)
    with np.errstate(over="ignore"):
        return _finite(float(np.power(1.0 + np.mean(series), periods_per_year)) - 1.0)


def benchmark_returns(bars: pl.DataFrame, symbol: str, days: pl.Series) -> Returns:
    """Daily returns of buying ``symbol`` at its first open and holding it, on ``days``.

    Each day's value is the last close of that UTC date (the previous one where the
    symbol has no bar that day); the first day's return is against the first open, the
    same start as the strategy's capital.
    """
    own = bars.filter(pl.col("symbol") == symbol)
    if own.height == 0:
        raise DataError(f"the benchmark {symbol!r} has no bars in this run; add it to the "
                        "universe")
    first_open = float(own.get_column("open")[0])
    closes = (
        own.group_by(pl.col("ts").dt.date().alias("day"), maintain_order=True)
        .agg(pl.col("close").last())
    )
    aligned = (
        pl.DataFrame({"day": days}).join(closes, on="day", how="left", maintain_order="left")
        .get_column("close").fill_null(strategy="forward").fill_null(first_open).to_numpy()
    )
    previous = np.concatenate(([first_open], aligned[:-1]))
    return np.asarray(aligned / previous - 1.0, dtype=np.float64)


def trading_days(result: EngineResult) -> pl.Series:
    """The UTC dates of a run, in order (one per daily return)."""
    return result.equity.get_column("ts").dt.date().unique(maintain_order=True).alias("day")


def daily_returns(result: EngineResult) -> Returns:
    """Returns of the last equity of each UTC date; the first against the starting capital.

    After a wipe-out (equity 0) the remaining days return 0.
    """
    return _daily_returns(result, _day_ends(result))


def _daily_returns(result: EngineResult, ends: npt.NDArray[np.intp]) -> Returns:
    daily = result.equity.get_column("equity").to_numpy()[ends]
    previous = np.concatenate(([result.capital], daily[:-1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        returns = np.where(previous > 0, daily / previous - 1.0, 0.0)
    return np.asarray(returns, dtype=np.float64)


_US_PER_DAY = 86_400_000_000


# The day ends of the last timestamps seen, with those timestamps. The runs on one bars
# frame share one ts column (vectorized._ts_column); the array kept here keeps its memory
# from being reused, so the same address and layout mean the same timestamps.
_LAST_ENDS: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.intp]]] = []


def _day_ends(result: EngineResult) -> npt.NDArray[np.intp]:
    """Row of the last bar of each UTC date (the engine's timestamps are sorted, unique).

    Read-only: it may be shared with the next run on the same timestamps.
    """
    ts = micros(result.equity.get_column("ts"))
    for known, ends in list(_LAST_ENDS):  # a copy: another thread may replace it
        if (known.shape == ts.shape and known.strides == ts.strides
                and _address(known) == _address(ts)):
            return ends
    kernels = _compiled()
    if len(ts) and kernels is not None:
        ends = np.empty(len(ts), dtype=np.intp)
        ends = ends[: kernels[1](np.ascontiguousarray(ts), ends)].copy()
    else:
        day = ts // _US_PER_DAY  # floor division: the UTC date, also before 1970
        ends = np.flatnonzero(np.concatenate((day[1:] != day[:-1], [True])))
    ends.flags.writeable = False
    _LAST_ENDS[:] = [(ts, ends)]
    return ends


def _lowest_ratio_loop(equity: Any, capital: float) -> float:
    """``min(equity / max(running peak of equity, capital))`` in one pass; NaN if a ratio is.

    The same divisions as ``np.maximum.accumulate`` then ``np.maximum`` then ``/``, but
    only one per peak: while the peak holds, the divisor is one positive finite number,
    and a correctly rounded division by it is monotonic, so the stretch's lowest ratio is
    its lowest equity divided once. A ratio is NaN exactly when an equity is NaN or +inf
    (then the peak is +inf too). Compiled by Numba (see :func:`_compiled`).
    """
    peak = equity[0]
    divisor = peak if peak > capital else capital
    low, lowest = np.inf, np.inf  # low: the lowest equity since the peak last rose
    for value in equity:
        if not value < np.inf:  # NaN, or +inf: its ratio is +inf / +inf
            return np.nan
        if value > peak:
            ratio = low / divisor
            lowest = ratio if ratio < lowest else lowest
            peak, low = value, value
            divisor = peak if peak > capital else capital
        elif value < low:
            low = value
    ratio = low / divisor
    return float(ratio if ratio < lowest else lowest)


def _day_ends_loop(ts: Any, ends: Any) -> int:
    """Write into ``ends`` the rows where the UTC date (``ts // day``) changes next; their count.

    ``ts // day`` is recomputed only when a timestamp leaves the current date, so the
    answer is that of the floor division per row, for any order of timestamps.
    """
    n, count = len(ts), 0
    day = ts[0] // _US_PER_DAY
    start = day * _US_PER_DAY
    for t in range(1, n):
        value = ts[t]
        if value < start or value - start >= _US_PER_DAY:
            next_day = value // _US_PER_DAY
            if next_day != day:
                ends[count] = t - 1
                count += 1
            day, start = next_day, next_day * _US_PER_DAY
    ends[count] = n - 1
    return count + 1


_kernels: list[tuple[Any, Any]] = []


def _compiled() -> tuple[Any, Any] | None:
    """The compiled metric passes (loaded from Numba's cache), or None without Numba."""
    if _numba is None:
        return None
    if not _kernels:
        types: Any = _numba.types
        f8, i8 = types.Array(types.float64, 1, "C", readonly=True), types.int64
        ts = types.Array(i8, 1, "C", readonly=True)
        jit = _numba.njit
        _kernels.append((
            jit(types.float64(f8, types.float64), cache=True, nogil=True,
                error_model="numpy")(_lowest_ratio_loop),
            jit(i8(ts, types.Array(types.intp, 1, "C")), cache=True, nogil=True,
                error_model="numpy")(_day_ends_loop),
        ))
    return _kernels[0]


def bar_drawdown(result: EngineResult) -> float:
    """:func:`max_drawdown` of the equity marked at every close, the curve a report plots.

    The starting capital counts as a peak. Returns a negative fraction, 0.0 if it never fell.
    """
    equity = result.equity.get_column("equity").to_numpy()
    if len(equity) == 0:
        return 0.0
    capital = float(result.capital)
    kernels = _compiled()
    if capital > 0 and kernels is not None:
        # Every peak is then > 0: the lowest equity / peak in one compiled pass (NaN if
        # any equity is NaN, then the general formula below). x ↦ x − 1 is monotonic in
        # floating point, so min(r) − 1 = min(r − 1) exactly: the same number as below.
        lowest = float(kernels[0](np.ascontiguousarray(equity, dtype=np.float64), capital))
        if not math.isnan(lowest):
            return _finite(min(lowest - 1.0, 0.0))
    peak = np.maximum(np.maximum.accumulate(equity), capital)
    with np.errstate(divide="ignore", invalid="ignore"):
        drawdown = np.where(peak > 0, equity / peak - 1.0, -1.0)
    return _finite(min(float(drawdown.min()), 0.0))


def compute_metrics(
    result: EngineResult,
    *,
    risk_free: float = 0.0,
    periods_per_year: int = TRADING_DAYS,
    benchmark: Returns | None = None,
) -> Metrics:
    """All metrics of a run (conventions in ``docs/engine-conventions.md``).

    ``turnover`` is the mean over days of the notional traded that day divided by the
    equity at each trade, × ``periods_per_year``; ``exposure`` is the mean over bars of
    the gross exposure at the close. ``risk_free`` is per day. ``benchmark`` holds the
    benchmark's daily returns on the same days (:func:`benchmark_returns`); without it
    beta and alpha are None (the report and the CLI leave them out).
    """
    ends = _day_ends(result)
    returns = _daily_returns(result, ends)
    if benchmark is not None and len(benchmark) != len(returns):
        raise ValueError(f"benchmark has {len(benchmark)} daily returns, the run {len(returns)}")
    frame = result.equity
    turnover = frame.get_column("turnover").to_numpy()
    daily_turnover = np.add.reduceat(turnover, np.concatenate(([0], ends[:-1] + 1)))
    drawdown = bar_drawdown(result)
    return Metrics(
        total_return=total_return(returns),
        cagr=cagr(returns, periods_per_year=periods_per_year),
        annual_volatility=annual_volatility(returns, periods_per_year=periods_per_year),
        sharpe=sharpe(returns, risk_free=risk_free, periods_per_year=periods_per_year),
        sortino=sortino(returns, required_return=risk_free, periods_per_year=periods_per_year),
        max_drawdown=drawdown,
        turnover=_finite(_mean(daily_turnover) * periods_per_year),
        exposure=_finite(_mean(frame.get_column("gross_exposure").to_numpy())),
        n_days=len(returns),
        n_bars=frame.height,
        final_equity=_finite(result.final_equity),
        calmar=_calmar(returns, drawdown, periods_per_year=periods_per_year),
        max_drawdown_days=max_drawdown_days(returns),
        win_rate=win_rate(returns),
        profit_factor=_json_ratio(profit_factor(returns)),
        n_trades=result.n_trades,
        beta=None if benchmark is None else beta(returns, benchmark),
        alpha=None if benchmark is None else alpha(
            returns, benchmark, risk_free=risk_free, periods_per_year=periods_per_year),
        leverage_clipped_bars=result.leverage_clipped_bars,
    )


def metrics_for_spec(result: EngineResult, bars: pl.DataFrame, spec: BacktestSpec) -> Metrics:
    """:func:`compute_metrics` with the spec's risk-free rate (annual / 252) and benchmark."""
    bench = None
    if spec.benchmark is not None:
        bench = benchmark_returns(bars, spec.benchmark, trading_days(result))
    return compute_metrics(result, risk_free=spec.risk_free / TRADING_DAYS, benchmark=bench)


def _mean(values: Returns) -> float:
    return float(values.mean()) if len(values) else 0.0


def _calmar(returns: Returns, drawdown: float, *, periods_per_year: int) -> float:
    """:func:`calmar` with the run's drawdown (the one ``Metrics.max_drawdown`` reports)."""
    if drawdown >= 0.0:
        return 0.0
    return _finite(cagr(returns, periods_per_year=periods_per_year) / abs(drawdown))


def _json_ratio(value: float) -> float | None:
    """A ratio for ``Metrics``: +inf (no denominator) becomes None, JSON ``null``."""
    return None if math.isinf(value) else value


def _constant(values: Returns) -> bool:
    """All equal: the sample deviation is exactly 0 (a float mean may leave a ~1e-18 residue)."""
    return bool(values.max() == values.min())


def _finite(value: float) -> float:
    """NaN → 0.0 and ±inf → ±largest float, so every metric is valid JSON."""
    if math.isnan(value):
        return 0.0
    if math.isinf(value):
        return math.copysign(sys.float_info.max, value)
    return value
