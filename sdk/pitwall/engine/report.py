"""Run artifacts: ``metrics.json``, Parquet files and a self-contained ``report.html``.

* ``metrics.json``: the metrics (and the lookahead audit's verdict), sorted keys;
* ``equity.parquet``: one row per bar; ``positions.parquet`` and ``trades.parquet`` when
  the engine's result carries them;
* ``report.html``: one page, plotly.js inlined (nothing fetched): the lookahead banner,
  the metrics, equity vs benchmark with drawdown, exposure, rolling Sharpe, monthly
  returns, the trades (first rows) and the manifest.

All are deterministic: the same inputs give the same bytes, so a re-run of a manifest can
be checked with a hash. Every string a strategy or a researcher could control (parameters,
entrypoint, symbols, any manifest value) is HTML-escaped, and the figures' JSON is
embedded with ``<``, ``>`` and ``&`` as Unicode escapes so it cannot close its script.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow.parquet as pq

from pitwall.engine import charts
from pitwall.engine.audit import describe
from pitwall.engine.vectorized import EngineResult
from pitwall.models import Costs, LookaheadAudit, Metrics

if TYPE_CHECKING:
    import plotly.graph_objects as go

# Fixed div ids: plotly would otherwise put a random UUID in the page.
PLOT_DIV_ID = "pitwall-equity"
#: Rows of the trades table shown on the page (all of them are in trades.parquet).
MAX_TRADE_ROWS = 200


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` put the artifacts."""

    metrics_json: Path
    equity_parquet: Path
    report_html: Path
    positions_parquet: Path | None = None
    trades_parquet: Path | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file written."""
        return tuple(p for p in (self.metrics_json, self.equity_parquet, self.positions_parquet,
                                 self.trades_parquet, self.report_html) if p is not None)


def write_report(
    out_dir: Path, *, result: EngineResult, metrics: Metrics, manifest: dict[str, Any],
    bars: pl.DataFrame | None = None, benchmark: str | None = None,
    asked: tuple[dt.date, dt.date] | None = None,
) -> ReportPaths:
    """Write the metrics, the Parquet files and ``report.html`` into ``out_dir``.

    ``manifest`` is shown as a table (bundle hash, dataset@version, parameters, seed, SDK
    version…); its values may come from the strategy and are escaped. With ``bars`` the
    equity chart shows a benchmark: buy-and-hold of ``benchmark`` (a symbol), else of the
    universe in equal weight. ``asked`` (the spec's start and end) puts the period of the
    bars in the page, with a warning when they cover clearly less (:func:`period`).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    trades, positions = _frame(result, "trades"), _frame(result, "positions")
    paths = ReportPaths(
        metrics_json=out_dir / "metrics.json",
        equity_parquet=out_dir / "equity.parquet",
        report_html=out_dir / "report.html",
        positions_parquet=out_dir / "positions.parquet" if positions is not None else None,
        trades_parquet=out_dir / "trades.parquet" if trades is not None else None,
    )
    paths.metrics_json.write_text(metrics_json(metrics), encoding="utf-8")
    write_parquet(result.equity, paths.equity_parquet)
    if positions is not None and paths.positions_parquet is not None:
        write_parquet(positions, paths.positions_parquet)
    if trades is not None and paths.trades_parquet is not None:
        write_parquet(trades, paths.trades_parquet)
    bench = None
    if bars is not None:
        bench = charts.benchmark_equity(bars, result.equity.get_column("ts"), result.capital,
                                        benchmark)
    page = render_html(result=result, metrics=metrics, manifest=manifest, benchmark=bench,
                       benchmark_symbol=benchmark, trades=trades, asked=asked)
    paths.report_html.write_text(page, encoding="utf-8")
    return paths


def _frame(result: EngineResult, name: str) -> pl.DataFrame | None:
    """``result.trades()`` / ``result.positions()`` when the engine provides them."""
    method = getattr(result, name, None)
    if not callable(method):
        return None
    try:
        frame = method()
    except ValueError:  # a result built without a ledger
        return None
    return frame if isinstance(frame, pl.DataFrame) else None


def metrics_json(metrics: Metrics) -> str:
    """Sorted keys and Python's shortest round-trip float repr: stable across reruns."""
    return json.dumps(metrics.model_dump(mode="json"), sort_keys=True, indent=2,
                      allow_nan=False) + "\n"


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    """A frame as Parquet with no time-dependent metadata (same frame, same bytes)."""
    # Polars may attach its own schema metadata; keep only the column schema.
    table = frame.to_arrow().replace_schema_metadata(None)
    pq.write_table(table, path, compression="zstd", store_schema=False,
                   write_statistics=True, use_dictionary=False)


def write_equity_parquet(result: EngineResult, path: Path) -> None:
    """The per-bar equity frame as Parquet (see :func:`write_parquet`)."""
    write_parquet(result.equity, path)


#: Beyond this magnitude a ratio, a multiple or a percentage is shown as a bound: digits
#: past it say nothing a reader can use (a CAGR of 1.7e20 % is a broken run, not a number).
ABSURD = 1e6


def format_number(value: float | int | None, kind: str = "ratio") -> str:
    """One metric value as text that stays short whatever the number is.

    ``kind``: ``"pct"`` (a fraction shown as a percentage), ``"spct"`` (signed percentage),
    ``"ratio"`` (3 decimals), ``"x"`` (a multiple, e.g. turnover), ``"money"`` (2 decimals
    with thousands separators), ``"int"``, ``"days"``. None is ``"–"``; NaN and infinities
    are ``"nan"``, ``"inf"`` and ``"-inf"``; a magnitude past :data:`ABSURD` (in the unit
    shown) is ``">1e6 %"``, ``"<-1e6"`` and the like, never a 300-digit string.
    """
    if value is None:
        return "–"
    number = float(value)
    if not math.isfinite(number):
        return "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")
    if kind in ("money", "int", "days"):
        return _plain(number, kind)
    unit = {"pct": " %", "spct": " %", "x": "x"}.get(kind, "")
    shown = number * 100 if kind in ("pct", "spct") else number
    if abs(shown) > ABSURD:
        return (">" if shown > 0 else "<-") + f"1e6{unit}"
    return _FORMATS.get(kind, "{:.3f}").format(shown)


_FORMATS = {"pct": "{:.2f}%", "spct": "{:+.2f}%", "x": "{:.2f}x", "ratio": "{:.3f}"}


def _plain(number: float, kind: str) -> str:
    """Money and counts: every digit while they are ordinary, scientific past 1e15."""
    if abs(number) >= 1e15:
        return f"{number:.3e}"
    if kind == "money":
        return f"{number:,.2f}"
    return str(int(number)) if number.is_integer() else f"{number:g}"


METRIC_LABELS: dict[str, tuple[str, str]] = {
    "total_return": ("Total return", "spct"), "cagr": ("CAGR", "spct"),
    "annual_volatility": ("Annual volatility", "pct"), "sharpe": ("Sharpe", "ratio"),
    "sortino": ("Sortino", "ratio"), "calmar": ("Calmar", "ratio"),
    "max_drawdown": ("Max drawdown", "pct"),
    "max_drawdown_days": ("Max drawdown duration (days)", "days"),
    "win_rate": ("Win rate", "pct"), "profit_factor": ("Profit factor", "ratio"),
    "turnover": ("Turnover (annual)", "x"), "exposure": ("Exposure (mean gross)", "pct"),
    "n_trades": ("Trades", "int"), "beta": ("Beta", "ratio"),
    "alpha": ("Alpha (annual)", "spct"),
    "n_days": ("Days", "int"), "n_bars": ("Bars", "int"), "final_equity": ("Final equity", "money"),
}


def format_metrics(metrics: Metrics) -> list[tuple[str, str]]:
    """The metrics as (label, formatted value) rows: known ones in reading order, then the rest."""
    values = {k: v for k, v in metrics.model_dump().items() if k != "lookahead"}
    rows = [(label, format_number(values.pop(key), kind))
            for key, (label, kind) in METRIC_LABELS.items()
            if key in values and isinstance(values[key], int | float)]
    rows += [(key.replace("_", " ").capitalize(),
              (f"{value:.6g}" if math.isfinite(value) else format_number(value))
              if isinstance(value, float) else str(value))
             for key, value in sorted(values.items()) if value is not None]
    return rows


#: Annual turnover above which a run without costs says nothing: at 100x a year, one
#: basis point of cost per trade is 1% of return a year, and real costs are several.
HIGH_TURNOVER = 100.0


def costs_are_zero(costs: Costs | dict[str, Any] | None) -> bool:
    """Whether a spec's costs charge nothing at all (commission, spread, slippage, borrow)."""
    if costs is None:
        return True
    c = costs if isinstance(costs, Costs) else Costs.model_validate(costs)
    return (c.commission_bps == c.slippage_bps == c.commission_per_share == c.borrow_bps == 0
            and c.spread_model == "fixed" and c.spread_bps == 0)


def cost_warning(metrics: Metrics, costs: Costs | dict[str, Any] | None) -> str | None:
    """The sentence that says a result is meaningless: high turnover and no costs at all."""
    turnover = metrics.turnover
    if not costs_are_zero(costs) or not (turnover > HIGH_TURNOVER or math.isinf(turnover)):
        return None
    return (f"Turnover is {format_number(turnover, 'x')} a year and the run charged no costs "
            "(commission, spread, slippage, borrow all zero): at this turnover even one basis "
            "point per trade changes the result by more than "
            f"{format_number(min(turnover, ABSURD) * 1e-4, 'pct')} a year. Set costs "
            "(e.g. --commission-bps 1 --spread-bps 2) before trusting these numbers.")


def verdict(metrics: Metrics | None) -> tuple[str, str] | None:
    """The audit's state as ``(status, short label)``; None when no audit ran."""
    audit = metrics.lookahead if metrics is not None else None
    if audit is None:
        return None
    label = {"flagged": "LOOKAHEAD FLAGGED", "no_lookahead_found": "no lookahead found",
             "exact": "no lookahead (exact)", "not_run": "audit not run"}[audit.status]
    return audit.status, label


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1.5em;"
    "color:#222}h1{margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}"
    "table{border-collapse:collapse;font-size:14px}"
    "td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}"
    "td.num{text-align:right;font-family:monospace}"
    ".banner{padding:.8em 1em;border-radius:6px;margin:1em 0;font-weight:600}"
    ".no_lookahead_found,.exact{background:#e6f4ea;border:1px solid #34a853}"
    ".flagged{background:#fce8e6;border:1px solid #d93025}"
    ".not_run{background:#f1f3f4;border:1px solid #9aa0a6}"
    ".warn{background:#fef7e0;border:1px solid #f9ab00}"
    ".metrics{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:6px}"
    ".metric{border:1px solid #ddd;border-radius:6px;padding:6px 10px;min-width:0}"
    ".metric .v{font-size:20px;font-family:monospace;overflow-wrap:anywhere}"
    ".metric .k{font-size:12px;color:#666}"
    ".badge{font-size:14px;padding:2px 8px;border-radius:10px;vertical-align:middle}"
    ".note{color:#666;font-size:13px}"
)


def render_html(*, result: EngineResult, metrics: Metrics, manifest: dict[str, Any],
                benchmark: Any = None, benchmark_symbol: str | None = None,
                trades: pl.DataFrame | None = None,
                asked: tuple[dt.date, dt.date] | None = None) -> str:
    """The self-contained page (see the module docstring)."""
    from plotly.offline import get_plotlyjs

    label = (f"buy & hold {benchmark_symbol}" if benchmark_symbol
             else "equal-weight buy & hold of the universe")
    data = charts.chart_data(result, benchmark)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>Pitwall backtest report</title>", f"<style>{_CSS}</style>",
        f"<script>{get_plotlyjs()}</script>", "</head><body>",
        f"<h1>Backtest report {_badge(metrics)}</h1>",
        _period_banner(result, metrics, asked),
        _cost_banner(metrics, manifest),
        _audit_banner(metrics.lookahead), _leverage_banner(result),
        '<div class="metrics">', *(
            f'<div class="metric"><div class="v">{html.escape(v)}</div>'
            f'<div class="k">{html.escape(k)}</div></div>' for k, v in format_metrics(metrics)),
        "</div>",
        "<h2>Equity and drawdown</h2>",
        f'<p class="note">Benchmark: {html.escape(label)}, bought at the first open, no costs.'
        + (" One point per day (the last close; drawdown: the day's worst)." if data.daily
           else "") + "</p>",
        _plot(charts.equity_figure(data, "benchmark"),
              PLOT_DIV_ID),
        "<h2>Exposure</h2>", _plot(charts.exposure_figure(data), "pitwall-exposure"),
        *_rolling_sharpe(result),
        "<h2>Monthly returns</h2>", _plot(charts.monthly_figure(result), "pitwall-monthly"),
        *_trades_section(trades, result),
        "<h2>Manifest</h2>", _table(manifest),
        "</body></html>", "",
    ]
    return "\n".join(parts)


def _badge(metrics: Metrics) -> str:
    """The audit's verdict in the page's title: a flagged run never reads as a success."""
    state = verdict(metrics)
    if state is None:
        return '<span class="badge not_run" id="verdict" data-audit="none">audit not run</span>'
    status, label = state
    icon = "&#9888; " if status == "flagged" else ""
    return (f'<span class="badge {status}" id="verdict" data-audit="{status}">{icon}'
            f"{html.escape(label)}</span>")


def _cost_banner(metrics: Metrics, manifest: dict[str, Any]) -> str:
    spec = manifest.get("spec")
    costs = spec.get("costs") if isinstance(spec, dict) else None
    try:
        warning = cost_warning(metrics, costs if isinstance(costs, dict) else None)
    except ValueError:  # a manifest whose costs do not validate: say nothing rather than fail
        return ""
    if warning is None:
        return ""
    return f'<div class="banner warn" id="cost-warning">&#9888; {html.escape(warning)}</div>'


def _audit_banner(audit: LookaheadAudit | None) -> str:
    if audit is None:
        return ('<div class="banner not_run">Lookahead audit: not run for this run (turned '
                "off in the spec, or an event-driven run, which is point-in-time by "
                "construction).</div>")
    icon = {"no_lookahead_found": "&#10004;", "exact": "&#10004;", "flagged": "&#9888;",
            "not_run": "&#8212;"}[audit.status]
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in audit.notes)
    cuts = ", ".join(c.isoformat() for c in audit.cuts_checked) or "none"
    return (f'<div class="banner {audit.status}" id="lookahead-audit">{icon} '
            f"{html.escape(describe(audit))}"
            f'<div class="note">Cuts checked: {html.escape(cuts)}; tolerance '
            f"{audit.tolerance:g} (relative to max(1, |w|)).</div>"
            + (f'<ul class="note">{notes}</ul>' if notes else "") + "</div>")


#: Calendar days an end of the bars may fall inside the asked range before the run is
#: called short of it: more than a weekend and a holiday, less than a missing week.
SHORT_DAYS = 7


def period(first: dt.date, last: dt.date, n_days: int,
           asked: tuple[dt.date, dt.date]) -> tuple[str, bool]:
    """The period the bars of a run cover (``first`` to ``last``), in words, and whether it
    falls clearly short of the asked ``(start, end)``: a range reaching past the data runs
    on what exists, and says so, instead of passing off a shorter run as the one asked for."""
    text = f"{first} to {last}, {n_days} trading day{'' if n_days == 1 else 's'}"
    start, end = asked
    short = (first - start).days > SHORT_DAYS or (end - last).days > SHORT_DAYS
    if short:
        text += (f"; asked {start} to {end}: the data has no bars of these symbols outside "
                 "this period")
    return text, short


def _period_banner(result: EngineResult, metrics: Metrics,
                   asked: tuple[dt.date, dt.date] | None) -> str:
    if asked is None or result.equity.height == 0:
        return ""
    ts = result.equity.get_column("ts")
    text, short = period(ts.min().date(), ts.max().date(),  # type: ignore[union-attr]
                         metrics.n_days, asked)
    if short:
        return f'<div class="banner warn" id="period">Period: {html.escape(text)}.</div>'
    return f'<p class="note" id="period">Period: {html.escape(text)}.</p>'


def _leverage_banner(result: EngineResult) -> str:
    clipped = int(getattr(result, "leverage_clipped_bars", 0) or 0)
    if clipped == 0:
        return ""
    return (f'<div class="banner warn">The targets exceeded the leverage limits at {clipped} '
            "bars and were scaled down to them (leverage policy: clip).</div>")


def _rolling_sharpe(result: EngineResult) -> list[str]:
    made = charts.rolling_sharpe_figure(result)
    if made is None:
        return ["<h2>Rolling Sharpe</h2>",
                '<p class="note">Too few days for a rolling Sharpe ratio.</p>']
    fig, window = made
    return [f"<h2>Rolling Sharpe ({window} trading days)</h2>",
            _plot(fig, "pitwall-rolling-sharpe")]


def _trades_section(trades: pl.DataFrame | None, result: EngineResult) -> list[str]:
    if trades is None:
        return []
    shown = trades.head(MAX_TRADE_ROWS)
    note = (f"{trades.height} trades ({result.n_trades} rebalances above the trade threshold)"
            + (f"; the first {MAX_TRADE_ROWS} are shown, all are in trades.parquet"
               if trades.height > MAX_TRADE_ROWS else ""))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in shown.columns)
    rows = []
    for row in shown.iter_rows():
        cells = "".join(_cell(v) for v in row)
        rows.append(f"<tr>{cells}</tr>")
    return ["<h2>Trades</h2>", f'<p class="note">{html.escape(note)}</p>',
            f"<table><tr>{head}</tr>", *rows, "</table>"]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:,.4f}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _plot(fig: go.Figure, div_id: str) -> str:
    """A figure as a div and a script; its JSON cannot end the script element."""
    fig.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 30, "b": 30})
    spec = fig.to_json(engine="json")
    safe = spec.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (f'<div id="{div_id}"></div><script>(function(){{var f={safe};'
            f'Plotly.newPlot("{div_id}",f.data,f.layout,{{"displaylogo":false,'
            f'"responsive":true}});}})();</script>')


def _table(rows: dict[str, Any], *, ordered: bool = False) -> str:
    """Two-column table; keys and values are escaped, non-strings shown as sorted JSON."""
    cells = []
    for key in rows if ordered else sorted(rows, key=str):
        value = rows[key]
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True,
                                                               default=str)
        css = ' class="num"' if isinstance(value, int | float) else ""
        cells.append(
            f"<tr><th>{html.escape(str(key))}</th><td{css}>{html.escape(text)}</td></tr>"
        )
    return "<table>\n" + "\n".join(cells) + "\n</table>"
