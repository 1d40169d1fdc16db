"""The series and Plotly figures of ``report.html``: equity vs benchmark, drawdown, exposure,
rolling Sharpe and monthly returns.

Everything here is computed from the trusted engine's result and the bars; no string a
strategy controls reaches a figure (trace names and titles are fixed). Long runs are drawn
with one point per day so the page stays light; the parquet files keep every bar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from pitwall.engine.metrics import TRADING_DAYS, daily_returns
from pitwall.engine.vectorized import EngineResult

if TYPE_CHECKING:
    import plotly.graph_objects as go

#: Above this many bars the intraday charts show one point per day.
MAX_INTRADAY_POINTS = 20_000
#: Window of the rolling Sharpe ratio, in trading days (shortened for short runs).
ROLLING_DAYS = 63
MIN_ROLLING_DAYS = 10
# Hide weekends and the hours between sessions (13:30–21:00 UTC covers EST and EDT).
_WEEKENDS = {"bounds": ["sat", "mon"]}
_NIGHTS = {"bounds": [21, 13.5], "pattern": "hour"}


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError as exc:  # pragma: no cover - plotly is a dependency of the SDK
        raise ImportError("report.html needs plotly; install it with `pip install plotly`"
                          ) from exc
    return go


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


@dataclass(frozen=True)
class ChartData:
    """The series the charts draw, already thinned for the page."""

    x: list[str]
    equity: list[float]
    benchmark: list[float] | None
    drawdown: list[float]
    gross: list[float]
    net: list[float]
    daily: bool  # one point per day (last close; drawdown: the day's worst)


def chart_data(result: EngineResult, benchmark: np.ndarray[Any, Any] | None) -> ChartData:
    """Per-bar series, or per-day ones when the run is longer than MAX_INTRADAY_POINTS."""
    frame = result.equity.select("ts", "equity", "gross_exposure", "net_exposure")
    equity = frame.get_column("equity").to_numpy()
    peak = np.maximum.accumulate(np.concatenate(([result.capital], equity)))[1:]
    frame = frame.with_columns(drawdown=pl.Series(np.where(peak > 0, equity / peak - 1, 0.0)))
    if benchmark is not None:
        frame = frame.with_columns(benchmark=pl.Series(benchmark))
    daily = frame.height > MAX_INTRADAY_POINTS
    if daily:
        last = [c for c in frame.columns if c != "drawdown"]
        frame = (frame.group_by(pl.col("ts").dt.date().alias("day"), maintain_order=True)
                 .agg(*(pl.col(c).last() for c in last), pl.col("drawdown").min()))
    x = frame.get_column("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_list()
    return ChartData(
        x=x, equity=frame.get_column("equity").to_list(),
        benchmark=frame.get_column("benchmark").to_list() if benchmark is not None else None,
        drawdown=frame.get_column("drawdown").to_list(),
        gross=frame.get_column("gross_exposure").to_list(),
        net=frame.get_column("net_exposure").to_list(), daily=daily,
    )


def equity_figure(data: ChartData, benchmark_label: str) -> go.Figure:
    """Equity vs benchmark above, drawdown below, sharing the time axis."""
    go = _plotly()
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3],
                        vertical_spacing=0.05)
    fig.add_trace(go.Scatter(x=data.x, y=data.equity, name="strategy", mode="lines",
                             line={"color": "#1f77b4"}), row=1, col=1)
    if data.benchmark is not None:
        fig.add_trace(go.Scatter(x=data.x, y=data.benchmark, name=benchmark_label,
                                 mode="lines", line={"color": "#999999", "dash": "dot"}),
                      row=1, col=1)
    fig.add_trace(go.Scatter(x=data.x, y=data.drawdown, name="drawdown", mode="lines",
                             fill="tozeroy", line={"color": "#d62728"}, showlegend=False),
                  row=2, col=1)
    fig.update_yaxes(title_text="equity", row=1, col=1)
    title = "drawdown (day's worst)" if data.daily else "drawdown"
    fig.update_yaxes(title_text=title, tickformat=".1%", row=2, col=1)
    _time_axis(fig, data.daily)
    fig.update_layout(height=560, legend={"orientation": "h", "y": 1.06, "x": 0})
    return fig


def exposure_figure(data: ChartData) -> go.Figure:
    """Gross and net exposure at the close, as fractions of equity."""
    go = _plotly()
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=data.x, y=data.gross, name="gross", mode="lines"))
    fig.add_trace(go.Scatter(x=data.x, y=data.net, name="net", mode="lines"))
    fig.update_yaxes(title_text="exposure", tickformat=".0%")
    _time_axis(fig, data.daily)
    fig.update_layout(height=280, legend={"orientation": "h", "y": 1.12, "x": 0})
    return fig


def rolling_sharpe_figure(result: EngineResult) -> tuple[go.Figure, int] | None:
    """Annualised Sharpe of daily returns over a trailing window; None under 20 days.

    The window is ROLLING_DAYS, or half the run when that is shorter (at least 10 days:
    a Sharpe ratio over fewer days is noise).
    """
    go = _plotly()
    returns = daily_returns(result)
    window = min(ROLLING_DAYS, len(returns) // 2)
    if window < MIN_ROLLING_DAYS:
        return None
    days = (result.equity.get_column("ts").dt.date().unique(maintain_order=True)
            .cast(pl.String).to_list())
    series = pl.Series(returns)
    mean = series.rolling_mean(window)
    std = series.rolling_std(window, ddof=1)
    values = [None if m is None or s is None or s == 0 else m / s * math.sqrt(TRADING_DAYS)
              for m, s in zip(mean.to_list(), std.to_list(), strict=True)]
    fig = go.Figure(go.Scatter(x=days, y=values, mode="lines", name="rolling Sharpe"))
    fig.add_hline(y=0, line={"color": "#999999", "width": 1})
    fig.update_yaxes(title_text=f"Sharpe ({window} d)")
    fig.update_xaxes(rangebreaks=[_WEEKENDS])
    fig.update_layout(height=280, showlegend=False)
    return fig, window


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


def monthly_figure(result: EngineResult) -> go.Figure:
    """Heat map of monthly returns, years down, months across, values in the cells."""
    go = _plotly()
    table = monthly_returns(result)
    years = sorted(set(table.get_column("year").to_list()))
    z: list[list[float | None]] = [[None] * 12 for _ in years]
    for year, month, ret in table.iter_rows():
        z[years.index(year)][month - 1] = ret
    text = [["" if v is None else f"{v:+.1%}" for v in row] for row in z]
    bound = max((abs(v) for row in z for v in row if v is not None), default=0.0) or 0.01
    fig = go.Figure(go.Heatmap(
        z=z, x=["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                "Dec"], y=[str(y) for y in years], text=text, texttemplate="%{text}",
        colorscale="RdYlGn", zmid=0, zmin=-bound, zmax=bound, showscale=False,
        hovertemplate="%{y} %{x}: %{text}<extra></extra>", xgap=2, ygap=2,
    ))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_layout(height=120 + 40 * len(years))
    return fig


def _time_axis(fig: go.Figure, daily: bool) -> None:
    fig.update_xaxes(rangebreaks=[_WEEKENDS] if daily else [_WEEKENDS, _NIGHTS])
