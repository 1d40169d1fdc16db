"""The series and Plotly figures of ``report.html``: equity vs benchmark, drawdown,
exposure, rolling Sharpe, annual returns, the return distribution and the attribution.

Figures are plain dicts (Plotly's ``data`` and ``layout``), drawn in the page by the
inlined plotly.js basic bundle (scatter and bar traces). Curves are downsampled to at
most :data:`MAX_POINTS` points per trace by keeping, in each of equal buckets of bars,
the bar with the lowest and the bar with the highest value (and the first and last
bar), so a drawdown's trough and an equity peak are drawn exactly (to :data:`DIGITS`
significant digits). Times travel as seconds since the previous point (the page adds
them up), which keeps the page small.

Everything here is computed from the trusted engine's result and the bars; no string a
strategy controls reaches a figure except symbols, which the page escapes with the rest
of the figures' JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from pitwall.engine.grid import micros
from pitwall.engine.metrics import TRADING_DAYS, daily_returns
from pitwall.engine.vectorized import EngineResult
from pitwall.models import TearSheet

#: Most points one trace of a curve carries into the page.
MAX_POINTS = 2_000
#: Significant digits of a plotted value (the JSON tear sheet and the parquet files keep
#: every digit): 1e-10 relative is far below a pixel, and it keeps the page small.
DIGITS = 10
#: Window of the rolling Sharpe ratio, in trading days (shortened for short runs).
ROLLING_DAYS = 63
MIN_ROLLING_DAYS = 10
# Hide weekends and the hours between sessions (13:30–21:00 UTC covers EST and EDT).
_WEEKENDS = {"bounds": ["sat", "mon"]}
_NIGHTS = {"bounds": [21, 13.5], "pattern": "hour"}
_US = 1_000_000

Figure = dict[str, Any]


def benchmark_equity(bars: pl.DataFrame, ts: pl.Series, capital: float,
                     symbol: str | None = None) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Buy-and-hold of ``symbol``, or of the universe in equal weight, marked at ``ts``.

    Each symbol's sleeve (``capital / N``) is bought at its first open, without costs,
    marked at its last close (forward-filled) and held in cash before its first bar.
    """
    frame = bars if symbol is None else bars.filter(pl.col("symbol") == symbol)
    rel = frame.select(
        "ts", "symbol", rel=pl.col("close") / pl.col("open").first().over("symbol")
    )
    n = rel.get_column("symbol").n_unique()
    if n == 0:
        return np.full(len(ts), capital)
    wide = rel.pivot(on="symbol", index="ts", values="rel", sort_columns=True)
    grid = pl.DataFrame({"ts": ts}).join(wide, on="ts", how="left", maintain_order="left")
    sleeves = grid.drop("ts").select(pl.all().forward_fill().fill_null(1.0))
    mean = sleeves.mean_horizontal().to_numpy()
    return np.asarray(capital * mean, dtype=np.float64)


def extremes(values: npt.NDArray[np.float64], max_points: int = MAX_POINTS) -> npt.NDArray[
        np.intp]:
    """Indices of the points to draw: all of them when there are at most ``max_points``;
    else the first, the last, and the lowest and highest of each of ``(max_points − 2) // 2``
    equal buckets, in order. Every bucket's minimum and maximum survive exactly."""
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    buckets = max(1, (max_points - 2) // 2)
    edges = np.linspace(0, n, buckets + 1).astype(np.intp)
    lows = np.minimum.reduceat(values, edges[:-1])
    highs = np.maximum.reduceat(values, edges[:-1])
    bucket = np.repeat(np.arange(buckets), np.diff(edges))
    # The first index in each bucket holding its low (high): a stable choice.
    is_low = values == lows[bucket]
    is_high = values == highs[bucket]
    first_low = np.minimum.reduceat(np.where(is_low, np.arange(n), n), edges[:-1])
    first_high = np.minimum.reduceat(np.where(is_high, np.arange(n), n), edges[:-1])
    keep = np.concatenate(([0, n - 1], first_low, first_high))
    return np.unique(keep)


@dataclass(frozen=True)
class Curve:
    """One downsampled series: ``ts`` in µs since the epoch (UTC) and its values."""

    ts: npt.NDArray[np.int64]
    y: npt.NDArray[np.float64]


def curve(ts: npt.NDArray[np.int64], values: npt.NDArray[np.float64],
          max_points: int = MAX_POINTS) -> Curve:
    """``values`` at ``ts``, downsampled with :func:`extremes`."""
    keep = extremes(values, max_points)
    return Curve(ts[keep], values[keep])


@dataclass(frozen=True)
class ChartData:
    """The curves the charts draw, each downsampled on its own (exact extremes)."""

    curves: dict[str, Curve]

    @property
    def drawdown(self) -> list[float]:
        """The plotted drawdown values (its minimum is the run's max drawdown)."""
        return [float(v) for v in self.curves["drawdown"].y]

    @property
    def equity(self) -> list[float]:
        return [float(v) for v in self.curves["equity"].y]


def chart_data(result: EngineResult, benchmark: np.ndarray[Any, Any] | None,
               max_points: int = MAX_POINTS) -> ChartData:
    """Equity, benchmark, drawdown (from the running peak, the capital a peak), gross
    and net exposure, per bar, each downsampled to ``max_points`` (exposures to half)."""
    frame = result.equity
    ts = micros(frame.get_column("ts")).astype(np.int64)
    equity = frame.get_column("equity").to_numpy()
    peak = np.maximum.accumulate(np.concatenate(([result.capital], equity)))[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        drawdown = np.where(peak > 0, equity / peak - 1.0, 0.0)
    series = {"equity": equity, "drawdown": drawdown,
              "gross": frame.get_column("gross_exposure").to_numpy(),
              "net": frame.get_column("net_exposure").to_numpy()}
    if benchmark is not None:
        series["benchmark"] = np.asarray(benchmark, dtype=np.float64)
    # Exposure is context, not a figure a reader checks to the bar: half the points.
    return ChartData({k: curve(ts, np.asarray(v, dtype=np.float64),
                               max_points // 2 if k in ("gross", "net") else max_points)
                      for k, v in series.items()})


def _line(c: Curve, name: str, **style: Any) -> dict[str, Any]:
    """A scatter trace whose times are seconds since the previous point (``xd``, ``x0``)."""
    seconds = c.ts // _US
    deltas = np.diff(seconds, prepend=seconds[:1]) if len(seconds) else seconds
    return {"type": "scatter", "mode": "lines", "name": name,
            "x0": int(seconds[0]) if len(seconds) else 0, "xd": deltas.tolist(),
            "y": [float(f"{v:.{DIGITS}g}") for v in c.y.tolist()], **style}


def _time_axis(intraday: bool) -> dict[str, Any]:
    return {"type": "date", "rangebreaks": [_WEEKENDS, _NIGHTS] if intraday else [_WEEKENDS]}


def equity_figure(data: ChartData, benchmark_label: str) -> Figure:
    """Equity vs benchmark above, drawdown below, sharing the time axis."""
    traces = [_line(data.curves["equity"], "strategy", line={"color": "#1f77b4"})]
    if "benchmark" in data.curves:
        traces.append(_line(data.curves["benchmark"], benchmark_label,
                            line={"color": "#999999", "dash": "dot"}))
    traces.append(_line(data.curves["drawdown"], "drawdown", fill="tozeroy",
                        line={"color": "#d62728"}, showlegend=False, yaxis="y2"))
    return {"data": traces, "layout": {
        "height": 560, "legend": {"orientation": "h", "y": 1.06, "x": 0},
        "xaxis": {**_time_axis(True), "anchor": "y2"},
        "yaxis": {"domain": [0.32, 1], "title": {"text": "equity"}},
        "yaxis2": {"domain": [0, 0.28], "title": {"text": "drawdown"}, "tickformat": ".1%"},
    }}


def exposure_figure(data: ChartData) -> Figure:
    """Gross and net exposure at the close, as fractions of equity."""
    return {"data": [_line(data.curves["gross"], "gross"), _line(data.curves["net"], "net")],
            "layout": {"height": 280, "legend": {"orientation": "h", "y": 1.12, "x": 0},
                       "xaxis": _time_axis(True),
                       "yaxis": {"title": {"text": "exposure"}, "tickformat": ".0%"}}}


def rolling_sharpe(result: EngineResult) -> tuple[Curve, int] | None:
    """Annualised Sharpe of daily returns over a trailing window; None under 20 days.

    The window is ROLLING_DAYS, or half the run when that is shorter (at least 10 days:
    a Sharpe ratio over fewer days is noise). Days without a value are left out.
    """
    returns = daily_returns(result)
    window = min(ROLLING_DAYS, len(returns) // 2)
    if window < MIN_ROLLING_DAYS:
        return None
    ends = result.equity.group_by(pl.col("ts").dt.date().alias("d"), maintain_order=True).agg(
        pl.col("ts").last()).get_column("ts")
    series = pl.Series(returns)
    mean = series.rolling_mean(window).to_numpy()
    std = series.rolling_std(window, ddof=1).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        values = mean / std * math.sqrt(TRADING_DAYS)
    ok = np.isfinite(values) & (std > 0)
    day_ts = (micros(ends) // (86_400 * _US)) * (86_400 * _US)
    return curve(day_ts.astype(np.int64)[ok], values[ok]), window


def rolling_sharpe_figure(made: tuple[Curve, int]) -> Figure:
    c, window = made
    return {"data": [_line(c, "rolling Sharpe")], "layout": {
        "height": 280, "showlegend": False, "xaxis": _time_axis(False),
        "yaxis": {"title": {"text": f"Sharpe ({window} d)"}},
        "shapes": [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": 0, "y1": 0,
                    "line": {"color": "#999999", "width": 1}}]}}


def annual_figure(sheet: TearSheet) -> Figure:
    """Each calendar year's return, as bars (green up, red down)."""
    years = [str(p.year) for p in sheet.annual_returns]
    rets = [p.ret for p in sheet.annual_returns]
    return {"data": [{"type": "bar", "x": years, "y": rets, "name": "year",
                      "marker": {"color": [_sign_color(r) for r in rets]}}],
            "layout": {"height": 260, "showlegend": False,
                       "xaxis": {"type": "category"}, "yaxis": {"tickformat": ".1%"}}}


def distribution_figure(sheet: TearSheet) -> Figure:
    """The histogram of daily returns, with the VaR and CVaR as vertical lines."""
    h = sheet.distribution
    centres = [(a + b) / 2 for a, b in zip(h.edges[:-1], h.edges[1:], strict=True)]
    widths = [b - a for a, b in zip(h.edges[:-1], h.edges[1:], strict=True)]
    shapes = []
    for value, color in ((sheet.returns.value_at_risk, "#f9ab00"),
                         (sheet.returns.conditional_value_at_risk, "#d62728")):
        if value is not None:
            shapes.append({"type": "line", "yref": "paper", "y0": 0, "y1": 1, "x0": value,
                           "x1": value, "line": {"color": color, "dash": "dash"}})
    return {"data": [{"type": "bar", "x": centres, "y": h.counts, "width": widths,
                      "name": "days", "marker": {"color": "#1f77b4"}}],
            "layout": {"height": 280, "showlegend": False, "bargap": 0.02, "shapes": shapes,
                       "xaxis": {"tickformat": ".1%", "title": {"text": "daily return"}},
                       "yaxis": {"title": {"text": "days"}}}}


def attribution_figure(sheet: TearSheet) -> Figure:
    """Net P&L by symbol, as horizontal bars (the best on top)."""
    rows = list(sheet.attribution)
    if sheet.attribution_rest is not None:
        half = len(rows) // 2
        rows = [*rows[:half], sheet.attribution_rest, *rows[half:]]
    symbols = [r.symbol for r in reversed(rows)]
    pnl = [r.net_pnl for r in reversed(rows)]
    return {"data": [{"type": "bar", "orientation": "h", "y": symbols, "x": pnl,
                      "name": "net P&L", "marker": {"color": [_sign_color(v) for v in pnl]}}],
            "layout": {"height": 120 + 18 * len(rows), "showlegend": False,
                       "yaxis": {"type": "category", "automargin": True},
                       "xaxis": {"title": {"text": "net P&L"}}}}


def _sign_color(value: float) -> str:
    return "#34a853" if value >= 0 else "#d62728"


def monthly_returns(result: EngineResult) -> pl.DataFrame:
    """``year, month, ret``: compounded return of each calendar month (UTC)."""
    month_end = (result.equity.group_by(pl.col("ts").dt.truncate("1mo").alias("m"),
                                        maintain_order=True)
                 .agg(pl.col("equity").last()).sort("m"))
    prev = month_end.get_column("equity").shift(1).fill_null(result.capital)
    return month_end.select(
        year=pl.col("m").dt.year(), month=pl.col("m").dt.month(),
        ret=pl.col("equity") / prev - 1.0,
    )
