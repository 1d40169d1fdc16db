"""Run artifacts: ``metrics.json``, ``equity.parquet`` and a self-contained ``report.html``.

All three are deterministic: the same inputs give the same bytes, so a re-run of a
manifest can be checked with a hash. Every string a strategy could control (parameters,
names, any manifest value) is HTML-escaped before it reaches the page.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from pitwall.engine.execution import EngineResult
from pitwall.models import Metrics

if TYPE_CHECKING:
    import plotly.graph_objects as go

# A fixed div id: plotly would otherwise put a random UUID in the page.
PLOT_DIV_ID = "pitwall-equity"


@dataclass(frozen=True)
class ReportPaths:
    """Where :func:`write_report` put the artifacts."""

    metrics_json: Path
    equity_parquet: Path
    report_html: Path


def write_report(
    out_dir: Path, *, result: EngineResult, metrics: Metrics, manifest: dict[str, Any]
) -> ReportPaths:
    """Write ``metrics.json``, ``equity.parquet`` and ``report.html`` into ``out_dir``.

    ``manifest`` is shown as a table (bundle hash, dataset@version, parameters, seed, SDK
    version…); its values may come from the strategy and are escaped.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(
        metrics_json=out_dir / "metrics.json",
        equity_parquet=out_dir / "equity.parquet",
        report_html=out_dir / "report.html",
    )
    paths.metrics_json.write_text(metrics_json(metrics), encoding="utf-8")
    write_equity_parquet(result, paths.equity_parquet)
    paths.report_html.write_text(
        render_html(result=result, metrics=metrics, manifest=manifest), encoding="utf-8"
    )
    return paths


def metrics_json(metrics: Metrics) -> str:
    """Sorted keys and Python's shortest round-trip float repr: stable across reruns."""
    return json.dumps(metrics.model_dump(mode="json"), sort_keys=True, indent=2,
                      allow_nan=False) + "\n"


def write_equity_parquet(result: EngineResult, path: Path) -> None:
    """The per-bar equity frame as Parquet with no time-dependent metadata."""
    table = result.equity.to_arrow()
    # Polars may attach its own schema metadata; keep only the column schema.
    table = table.replace_schema_metadata(None)
    pq.write_table(
        table,
        path,
        compression="zstd",
        store_schema=False,
        write_statistics=True,
        use_dictionary=False,
    )


METRIC_LABELS: dict[str, tuple[str, str]] = {
    "total_return": ("Total return", "{:+.2%}"), "cagr": ("CAGR", "{:+.2%}"),
    "annual_volatility": ("Annual volatility", "{:.2%}"), "sharpe": ("Sharpe", "{:.3f}"),
    "sortino": ("Sortino", "{:.3f}"), "max_drawdown": ("Max drawdown", "{:.2%}"),
    "turnover": ("Turnover (annual)", "{:.2f}x"), "exposure": ("Exposure (mean gross)", "{:.2%}"),
    "n_days": ("Days", "{}"), "n_bars": ("Bars", "{}"), "final_equity": ("Final equity", "{:,.2f}"),
}


def format_metrics(metrics: Metrics) -> list[tuple[str, str]]:
    """The metrics as (label, formatted value) rows, in reading order."""
    return [(label, fmt.format(getattr(metrics, key))) for key, (label, fmt) in
            METRIC_LABELS.items()]


def render_html(*, result: EngineResult, metrics: Metrics, manifest: dict[str, Any]) -> str:
    """A self-contained page: equity and drawdown charts, the metrics and the manifest."""
    figure = _figure(result)
    plot = figure.to_html(
        full_html=False, include_plotlyjs=True, div_id=PLOT_DIV_ID,
        config={"displaylogo": False},
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            "<title>Pitwall backtest report</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
            "td.num{text-align:right;font-family:monospace}</style>",
            "</head><body>",
            "<h1>Backtest report</h1>",
            plot,
            "<h2>Metrics</h2>",
            _table(dict(format_metrics(metrics)), ordered=True),
            "<h2>Manifest</h2>",
            _table(manifest),
            "</body></html>",
            "",
        ]
    )


def _figure(result: EngineResult) -> go.Figure:
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError as exc:  # pragma: no cover - plotly is a dependency of the SDK
        raise ImportError(
            "report.html needs plotly; install it with `pip install plotly`"
        ) from exc
    frame = result.equity
    # ISO strings make the embedded JSON independent of plotly's datetime encoding.
    x = frame.get_column("ts").dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_list()
    equity = frame.get_column("equity").to_numpy()
    peak = np.maximum.accumulate(np.concatenate(([result.capital], equity)))[1:]
    drawdown = np.where(peak > 0, equity / peak - 1.0, 0.0)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3],
                        vertical_spacing=0.05)
    fig.add_trace(go.Scatter(x=x, y=equity.tolist(), name="equity", mode="lines"),
                  row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=drawdown.tolist(), name="drawdown", mode="lines",
                             fill="tozeroy"), row=2, col=1)
    fig.update_yaxes(title_text="equity", row=1, col=1)
    fig.update_yaxes(title_text="drawdown", tickformat=".1%", row=2, col=1)
    # Hide weekends and the hours between sessions (13:30–21:00 UTC covers EST and EDT).
    fig.update_xaxes(rangebreaks=[{"bounds": ["sat", "mon"]},
                                  {"bounds": [21, 13.5], "pattern": "hour"}])
    fig.update_layout(height=600, showlegend=False, margin={"l": 60, "r": 20, "t": 20})
    return fig


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

