"""Run artifacts: ``metrics.json``, ``tearsheet.json``, Parquet files and ``report.html``.

* ``metrics.json``: the metrics (and the lookahead audit's verdict), sorted keys;
* ``tearsheet.json``: the tear sheet (:class:`~pitwall.models.TearSheet`,
  :mod:`.tearsheet`), kept apart from the metrics so the metrics row stays small;
* ``equity.parquet``: one row per bar; ``positions.parquet`` and ``trades.parquet`` when
  the engine's result carries them;
* ``report.html``: the tear sheet as one self-contained page: plotly.js (its basic
  bundle, once) inlined, nothing fetched; the header (strategy, parameters, universe,
  period, benchmark, costs), the banners, the metrics, statistics against the benchmark,
  equity and drawdown, drawdown periods, returns by year and month, the distribution,
  best and worst days, exposure, rolling Sharpe, attribution, costs, round trips and
  fills (paged) and the manifest. Curves are downsampled with exact extremes (charts.py).

All are deterministic: the same inputs give the same bytes, so a re-run of a manifest can
be checked with a hash. Every string a strategy or a researcher could control (parameters,
entrypoint, symbols, any manifest value) is HTML-escaped or set as text, and the page's
JSON is embedded with ``<``, ``>`` and ``&`` as Unicode escapes so it cannot close its
script.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from pitwall.engine import charts
from pitwall.engine import tearsheet_page as page
from pitwall.engine.audit import describe
from pitwall.engine.numbers import ABSURD, format_number
from pitwall.engine.tearsheet import build_tearsheet, spec_of
from pitwall.engine.vectorized import EngineResult
from pitwall.models import Costs, LookaheadAudit, Metrics, TearSheet

# ABSURD and format_number are re-exported: the CLI, the widget and the tests use them here.
__all__ = [
    "ABSURD", "HIGH_TURNOVER", "METRIC_LABELS", "PLOTLY_JS", "PLOT_DIV_ID", "SHORT_DAYS",
    "ReportPaths", "cost_warning", "costs_are_zero", "format_metrics", "format_number",
    "metrics_json", "period", "plotly_js", "render_html", "tearsheet_json", "verdict",
    "write_equity_parquet", "write_parquet", "write_report",
]

# Fixed div ids: plotly would otherwise put a random UUID in the page.
PLOT_DIV_ID = "pitwall-equity"
#: The plotly.js bundle inlined in the page (scatter, bar and pie traces; MIT licence
#: beside it): the full bundle alone is 4.8 MB, three times the page's budget.
PLOTLY_JS = "plotly-basic.min.js"


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` put the artifacts."""

    metrics_json: Path
    equity_parquet: Path
    report_html: Path
    positions_parquet: Path | None = None
    trades_parquet: Path | None = None
    tearsheet_json: Path | None = None

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file written."""
        return tuple(p for p in (self.metrics_json, self.equity_parquet, self.positions_parquet,
                                 self.trades_parquet, self.tearsheet_json, self.report_html)
                     if p is not None)


def write_report(
    out_dir: Path, *, result: EngineResult, metrics: Metrics, manifest: dict[str, Any],
    bars: pl.DataFrame | None = None, benchmark: str | None = None,
    asked: tuple[dt.date, dt.date] | None = None,
) -> ReportPaths:
    """Write the metrics, the tear sheet, the Parquet files and ``report.html`` into ``out_dir``.

    ``manifest`` gives the page's header (``entrypoint``, ``bundle_sha256``, ``spec``:
    parameters, universe, period, costs) and is shown as a table; its values may come
    from the strategy and are escaped. With ``bars`` the page compares the run with a
    benchmark: buy-and-hold of ``benchmark`` (a symbol), else of the universe in equal
    weight. ``asked`` (the spec's start and end) puts the period of the bars in the page,
    with a warning when they cover clearly less (:func:`period`).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    trades, positions = _frame(result, "trades"), _frame(result, "positions")
    paths = ReportPaths(
        metrics_json=out_dir / "metrics.json",
        equity_parquet=out_dir / "equity.parquet",
        report_html=out_dir / "report.html",
        positions_parquet=out_dir / "positions.parquet" if positions is not None else None,
        trades_parquet=out_dir / "trades.parquet" if trades is not None else None,
        tearsheet_json=out_dir / "tearsheet.json",
    )
    paths.metrics_json.write_text(metrics_json(metrics), encoding="utf-8")
    write_parquet(result.equity, paths.equity_parquet)
    if positions is not None and paths.positions_parquet is not None:
        write_parquet(positions, paths.positions_parquet)
    if trades is not None and paths.trades_parquet is not None:
        write_parquet(trades, paths.trades_parquet)
    sheet = build_tearsheet(result, manifest=manifest, bars=bars, benchmark=benchmark,
                            trades=trades, positions=positions)
    assert paths.tearsheet_json is not None
    paths.tearsheet_json.write_text(tearsheet_json(sheet), encoding="utf-8")
    bench = None
    if bars is not None:
        bench = charts.benchmark_equity(bars, result.equity.get_column("ts"), result.capital,
                                        benchmark)
    text = render_html(result=result, metrics=metrics, manifest=manifest, benchmark=bench,
                       sheet=sheet, trades=trades, asked=asked)
    paths.report_html.write_text(text, encoding="utf-8")
    return paths


def tearsheet_json(sheet: TearSheet) -> str:
    """The tear sheet as sorted JSON (finite numbers only), one trailing newline."""
    return json.dumps(sheet.model_dump(mode="json"), sort_keys=True, indent=1,
                      allow_nan=False) + "\n"


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
    "table.header th{background:#f6f8fa;width:9em}table.header{margin:.5em 0 1em}"
    ".pair{display:flex;gap:2em}.pager{margin:.4em 0;font-size:13px}"
)


def render_html(*, result: EngineResult, metrics: Metrics, manifest: dict[str, Any],
                sheet: TearSheet, benchmark: Any = None,
                trades: pl.DataFrame | None = None,
                asked: tuple[dt.date, dt.date] | None = None) -> str:
    """The self-contained tear sheet (see the module docstring)."""
    spec = spec_of(manifest)
    costs = spec.costs if spec is not None else None
    label = sheet.header.benchmark if benchmark is not None else "none"
    data = charts.chart_data(result, benchmark)
    strategy = sheet.header.strategy or "backtest"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Pitwall tear sheet: {html.escape(strategy)}</title>",
        f"<style>{_CSS}</style>", f"<script>{plotly_js()}</script>",
        f"<script>{page.SCRIPT}</script>", "</head><body>",
        f"<h1>Tear sheet: {html.escape(strategy)} {_badge(metrics)}</h1>",
        page.header_section(sheet, costs, spec.execution if spec is not None else None),
        _period_banner(result, metrics, asked),
        _cost_banner(metrics, manifest),
        _audit_banner(metrics.lookahead), _leverage_banner(result),
        '<div class="metrics">', *(
            f'<div class="metric"><div class="v">{html.escape(v)}</div>'
            f'<div class="k">{html.escape(k)}</div></div>' for k, v in format_metrics(metrics)),
        "</div>",
        *page.stats_section(sheet),
        "<h2>Equity and drawdown</h2>",
        f'<p class="note">Benchmark: {html.escape(label)}, bought at the first open, no '
        "costs. Every bar is drawn when there are few; otherwise each of about "
        f"{charts.MAX_POINTS // 2} equal stretches of bars shows its lowest and highest "
        "value, so peaks and troughs are exact.</p>",
        page.plot(charts.equity_figure(data, "benchmark"), PLOT_DIV_ID),
        *page.drawdown_section(sheet),
        "<h2>Returns by year and month</h2>",
        page.plot(charts.annual_figure(sheet), "pitwall-annual"),
        page.monthly_table(sheet.monthly_returns, sheet.annual_returns),
        "<h2>Distribution of daily returns</h2>",
        f'<p class="note">Dashed lines: the one-day VaR (orange) and CVaR (red) at '
        f"{sheet.var_cutoff:.0%}, historical (the {sheet.var_cutoff:.0%} percentile of the "
        "daily returns, and the mean of the days at or below it).</p>",
        page.plot(charts.distribution_figure(sheet), "pitwall-distribution"),
        page.days_section(sheet),
        "<h2>Exposure</h2>", page.plot(charts.exposure_figure(data), "pitwall-exposure"),
        *_rolling_sharpe(result),
        *_attribution(sheet),
        *page.costs_section(sheet, result.capital),
        *page.trips_section(sheet),
        *page.fills_section(trades, result.n_trades),
        "<h2>Manifest</h2>", _table(manifest),
        "</body></html>", "",
    ]
    return "\n".join(parts)


@cache
def plotly_js() -> str:
    """The inlined plotly.js bundle (read once per process)."""
    return (resources.files("pitwall.engine") / "assets" / PLOTLY_JS).read_text("utf-8")


def _attribution(sheet: TearSheet) -> list[str]:
    if not sheet.attribution:
        return []
    return ["<h2>Attribution by symbol</h2>",
            '<p class="note">A symbol\'s P&amp;L: its end value less what was bought plus '
            "what was sold; net of its trade costs. The symbols' net P&amp;L less borrow is "
            f"the run's P&amp;L ({html.escape(format_number(sheet.net_pnl, 'money'))}).</p>",
            page.plot(charts.attribution_figure(sheet), "pitwall-attribution"),
            page.attribution_table(sheet)]


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
    made = charts.rolling_sharpe(result)
    if made is None:
        return ["<h2>Rolling Sharpe</h2>",
                '<p class="note">Too few days for a rolling Sharpe ratio.</p>']
    return [f"<h2>Rolling Sharpe ({made[1]} trading days)</h2>",
            page.plot(charts.rolling_sharpe_figure(made), "pitwall-rolling-sharpe")]


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
