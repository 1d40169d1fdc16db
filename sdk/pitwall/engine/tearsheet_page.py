"""The tear-sheet sections of ``report.html``: header, statistics, drawdown periods,
returns by period, distribution, attribution, costs, round trips and fills (paged).

Every string a strategy or researcher controls (entrypoint, parameters, symbols) is
HTML-escaped here, or travels in JSON with ``<``, ``>`` and ``&`` as Unicode escapes and
is put into the page by ``textContent`` (the paged tables), never as markup.
"""

from __future__ import annotations

import html
import json
from typing import Any

import polars as pl

from pitwall.engine.numbers import format_number
from pitwall.models import Costs, Execution, PeriodReturn, RoundTrip, TearSheet

#: Rows per page of the paged tables.
PAGE_ROWS = 50
#: Fills carried into the page (all of them are in trades.parquet).
MAX_FILL_ROWS = 500
#: Universe symbols named in the header.
HEADER_SYMBOLS = 50

#: The page's own script: draws a figure whose traces carry times as deltas (charts.py)
#: and pages a table whose cells are set as text.
SCRIPT = """
function pwPlot(id,f){f.data.forEach(function(t){if(t.xd){var s=t.x0;
t.x=t.xd.map(function(d){s+=d;return s*1000;});delete t.xd;delete t.x0;}});
var l=Object.assign({margin:{l:60,r:20,t:30,b:40},paper_bgcolor:"white",plot_bgcolor:"white",
font:{family:"system-ui,sans-serif",size:12}},f.layout);
["xaxis","yaxis","yaxis2"].forEach(function(a){if(l[a])l[a]=Object.assign({gridcolor:"#eee",
zerolinecolor:"#ccc"},l[a]);});
Plotly.newPlot(id,f.data,l,{displaylogo:false,responsive:true});}
function pwTable(id,cols,nums,rows,per){var el=document.getElementById(id),page=0,
n=Math.max(1,Math.ceil(rows.length/per));function btn(t,off,dis){var b=document.createElement(
"button");b.textContent=t;b.disabled=dis;b.onclick=function(){page+=off;draw();};return b;}
function draw(){var t=document.createElement("table"),h=t.insertRow();cols.forEach(function(c){
var th=document.createElement("th");th.textContent=c;h.appendChild(th);});
rows.slice(page*per,(page+1)*per).forEach(function(r){var tr=t.insertRow();r.forEach(function(v,i){
var td=tr.insertCell();td.textContent=v;if(nums.indexOf(i)>=0)td.className="num";});});
var nav=document.createElement("div"),s=document.createElement("span");nav.className="pager";
s.textContent=" page "+(page+1)+" of "+n+" ("+rows.length+" rows) ";
nav.append(btn("\\u2039 prev",-1,page===0),s,btn("next \\u203a",1,page>=n-1));
el.replaceChildren(t,nav);}draw();}
"""


def safe_json(value: Any) -> str:
    """JSON that cannot end a script element (``<``, ``>``, ``&`` as Unicode escapes)."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def plot(figure: dict[str, Any], div_id: str) -> str:
    """A figure (charts.py) as a div and the script that draws it."""
    return (f'<div id="{div_id}"></div><script>pwPlot("{div_id}",{safe_json(figure)});'
            "</script>")


def paged(div_id: str, columns: list[str], numeric: list[int], rows: list[list[str]]) -> str:
    """A table of text rows, PAGE_ROWS at a time (plain JS, cells set as text)."""
    return (f'<div id="{div_id}"></div><script>pwTable("{div_id}",{safe_json(columns)},'
            f"{safe_json(numeric)},{safe_json(rows)},{PAGE_ROWS});</script>")


def table(head: list[str], rows: list[list[str]], numeric: int = 1) -> str:
    """A static table; cells from column ``numeric`` on are right-aligned numbers."""
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(
            f'<td{" class=num" if i >= numeric else ""}>{html.escape(c)}</td>'
            for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def header_section(sheet: TearSheet, costs: Costs | None,
                   execution: Execution | None = None) -> str:
    """Which strategy, parameters, universe, period, benchmark and costs this run is."""
    h = sheet.header
    universe = ", ".join(h.universe[:HEADER_SYMBOLS])
    if h.n_symbols > HEADER_SYMBOLS:
        universe += f" and {h.n_symbols - HEADER_SYMBOLS} more"
    if h.universe_rule is not None:
        universe += (f"; rule {h.universe_rule!r}: {h.universe_evaluations} evaluations, "
                     f"{h.universe_entered} symbols entered, {h.universe_left} left")
    params = ", ".join(f"{k}={json.dumps(v, sort_keys=True)}" for k, v in sorted(h.params.items()))
    asked = f"{h.start} to {h.end}" if h.start and h.end else "–"
    data = f"{h.first_day} to {h.last_day}, {h.n_days} trading days" if h.first_day else "–"
    rows = [
        ("Strategy", h.strategy or "–"),
        ("Bundle", (h.bundle_sha256 or "–")[:16]),
        ("Parameters", params or "none"),
        ("Universe", f"{h.n_symbols} symbols: {universe}" if h.n_symbols else "–"),
        ("Period", f"asked {asked}; bars {data}"),
        ("Data", (h.dataset + ("" if h.version is None else f"@v{h.version}"))
         if h.dataset else "–"),
        ("Benchmark", h.benchmark),
        ("Capital", format_number(h.capital, "money")),
        ("Costs preset", describe_preset(h.costs_preset, h.default_costs_preset)),
        ("Costs", describe_costs(costs)),
        ("Fills", describe_fills(execution)),
    ]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                    for k, v in rows)
    return f'<table class="header" id="header">{cells}</table>'


def describe_preset(preset: str | None, default: str | None) -> str:
    """The run's costs preset, and whether it is the deployment's default: ``default`` is
    the default the job's spec recorded at submission (``default_costs_preset``,
    docs/engine-conventions.md §2.3), None when it recorded none."""
    if preset is None:
        return "not recorded"
    if default is None:
        return f"{preset} (no deployment default recorded with the run)"
    if preset == default:
        return f"{preset} (the deployment's default)"
    return f"{preset} (asked for; the deployment's default was {default})"


def describe_fills(execution: Execution | None) -> str:
    """The fill model's settings in one line (docs/engine-conventions.md §2.3)."""
    if execution is None:
        return "not recorded"
    cap = (f"at most {execution.participation:.0%} of a bar's volume, the rest carried"
           if execution.participation else "no volume cap")
    lots = f"lots of {execution.lot_size:g} shares" if execution.lot_size else "fractional shares"
    parts = [f"next bar's open; {cap}", lots]
    if execution.min_trade_notional:
        parts.append(f"no trade under {execution.min_trade_notional:g}")
    parts.append(f"drift under {execution.rebalance_threshold:g} of equity not traded"
                 if execution.rebalance_threshold else "every drift rebalanced")
    return ", ".join(parts)


def describe_costs(costs: Costs | None) -> str:
    """The spec's cost settings in one line."""
    if costs is None:
        return "not recorded"
    spread = (f"spread {costs.spread_bps:g} bps" if costs.spread_model == "fixed"
              else "spread: half the bar's range")
    parts = [f"commission {costs.commission_bps:g} bps + {costs.commission_per_share:g}/share",
             f"slippage {costs.slippage_bps:g} bps", spread,
             f"borrow {costs.borrow_bps:g} bps/yr"]
    if costs.impact_coefficient:
        parts.append(f"impact coefficient {costs.impact_coefficient:g}")
    return ", ".join(parts)


_STATS = [("Total return", "total_return", "spct"), ("CAGR", "cagr", "spct"),
          ("Annual volatility", "annual_volatility", "pct"), ("Sharpe", "sharpe", "ratio"),
          ("Sortino", "sortino", "ratio"), ("Max drawdown (daily)", "max_drawdown", "pct"),
          ("Best day", "best_day", "spct"), ("Worst day", "worst_day", "spct"),
          ("VaR", "value_at_risk", "spct"), ("CVaR", "conditional_value_at_risk", "spct"),
          ("Skew", "skew", "ratio"), ("Excess kurtosis", "kurtosis", "ratio")]


def stats_section(sheet: TearSheet) -> list[str]:
    """Strategy vs benchmark statistics, and the benchmark-relative ones."""
    cut = f"{sheet.var_cutoff:.0%}"
    head = ["", "Strategy"] + ([f"Benchmark ({sheet.relative.benchmark})"]
                               if sheet.relative and sheet.benchmark else [])
    rows = []
    for label, key, kind in _STATS:
        text = f"{label} ({cut}, 1 day)" if key in ("value_at_risk",
                                                     "conditional_value_at_risk") else label
        row = [text, format_number(getattr(sheet.returns, key), kind)]
        if len(head) == 3 and sheet.benchmark is not None:
            row.append(format_number(getattr(sheet.benchmark, key), kind))
        rows.append(row)
    out = ["<h2>Statistics</h2>", table(head, rows)]
    rel = sheet.relative
    if rel is not None:
        out += [f"<h3>Against the benchmark ({html.escape(rel.benchmark)})</h3>", table(
            ["", "value"],
            [["Beta", format_number(rel.beta)],
             ["Alpha (annual)", format_number(rel.alpha, "spct")],
             ["Correlation", format_number(rel.correlation)],
             ["Tracking error (annual)", format_number(rel.tracking_error, "pct")],
             ["Information ratio (annual)", format_number(rel.information_ratio)],
             ["Active return (annual mean)", format_number(rel.active_return, "spct")]])]
    return out


def drawdown_section(sheet: TearSheet) -> list[str]:
    rows = [[str(i + 1), format_number(d.depth, "pct"), str(d.peak), str(d.valley),
             str(d.recovery) if d.recovery else "not recovered",
             format_number(d.duration_days, "int"), str(d.days_underwater)]
            for i, d in enumerate(sheet.drawdowns)]
    if not rows:
        return ["<h2>Drawdown periods</h2>", '<p class="note">No day closed below its peak.</p>']
    return ["<h2>Drawdown periods</h2>",
            '<p class="note">The deepest falls of the daily closes (pyfolio\'s drawdown '
            "table); duration in business days from peak to recovery, both included.</p>",
            table(["#", "Depth", "Peak", "Valley", "Recovery", "Duration", "Days under water"],
                  rows, numeric=1)]


_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def monthly_table(monthly: list[PeriodReturn], annual: list[PeriodReturn]) -> str:
    """Years down, months across, the year's return last; cells shaded by sign and size."""
    years = [p.year for p in annual]
    by = {(p.year, p.month): p.ret for p in monthly}
    bound = max((abs(p.ret) for p in monthly), default=0.0) or 0.01
    head = "".join(f"<th>{m}</th>" for m in ["", *_MONTHS, "Year"])
    rows = []
    for p in annual:
        cells = [f"<th>{p.year}</th>"]
        for month in range(1, 13):
            ret = by.get((p.year, month))
            cells.append("<td></td>" if ret is None else
                         f'<td class="num" style="background:{_shade(ret, bound)}">'
                         f"{format_number(ret, 'spct')}</td>")
        cells.append(f'<td class="num"><b>{format_number(p.ret, "spct")}</b></td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="monthly" data-years="{len(years)}"><tr>{head}</tr>{"".join(rows)}</table>'


def _shade(ret: float, bound: float) -> str:
    alpha = min(1.0, abs(ret) / bound) * 0.6
    rgb = "52,168,83" if ret >= 0 else "217,48,37"
    return f"rgba({rgb},{alpha:.2f})"


def days_section(sheet: TearSheet) -> str:
    best = [[str(d.day), format_number(d.ret, "spct")] for d in sheet.best_days]
    worst = [[str(d.day), format_number(d.ret, "spct")] for d in sheet.worst_days]
    return ('<div class="pair"><div><h3>Best days</h3>' + table(["Day", "Return"], best)
            + "</div><div><h3>Worst days</h3>" + table(["Day", "Return"], worst) + "</div></div>")


def attribution_table(sheet: TearSheet) -> str:
    """Each symbol's P&L, costs and net P&L (also as a fraction of the capital)."""
    rows = list(sheet.attribution)
    if sheet.attribution_rest is not None:
        half = len(rows) // 2
        rows = [*rows[:half], sheet.attribution_rest, *rows[half:]]
    capital = sheet.header.capital
    body = [[r.symbol, format_number(r.pnl, "money"), format_number(r.cost, "money"),
             format_number(r.net_pnl, "money"), format_number(r.net_pnl / capital, "spct"),
             format_number(r.traded_notional, "money"), str(r.n_fills)] for r in rows]
    return table(["Symbol", "P&L", "Trade costs", "Net P&L", "Net / capital", "Traded",
                  "Fills"], body)


def costs_section(sheet: TearSheet, capital: float) -> list[str]:
    c = sheet.costs
    traded = c.traded_notional
    rows = []
    for kind in ("commission", "slippage", "spread", "impact", "borrow"):
        value = getattr(c, kind)
        rows.append([kind.capitalize(), format_number(value, "money"),
                     format_number(None if value is None else value / capital, "pct"),
                     format_number(value / traded * 1e4 if value is not None and traded else None),
                     c.source.get(kind, "–")])
    rows.append(["Trade costs (engine)", format_number(c.trade_costs, "money"),
                 format_number(c.trade_costs / capital, "pct"),
                 format_number(c.trade_costs / traded * 1e4 if traded else None), "engine"])
    return ["<h2>Costs</h2>",
            f'<p class="note">Traded notional {html.escape(format_number(traded, "money"))}. '
            "Source: engine (charged per fill), rates (the spec's rates times the fills' "
            "notional and shares), rest (trade costs beyond those: market impact), identity "
            "(borrow: the symbols' net P&L less the run's P&L).</p>",
            table(["Kind", "Amount", "% of capital", "bps of traded", "Source"], rows)]


def trip_rows(trips: list[RoundTrip]) -> list[list[str]]:
    return [[t.symbol, t.direction, t.opened.strftime("%Y-%m-%d %H:%M"),
             t.closed.strftime("%Y-%m-%d %H:%M") if t.closed else "open", str(t.n_fills),
             f"{t.max_qty:,.4g}", f"{t.entry_price:,.4f}",
             "–" if t.exit_price is None else f"{t.exit_price:,.4f}",
             format_number(t.pnl, "money"), format_number(t.cost, "money"),
             format_number(t.net_pnl, "money"), format_number(t.ret, "spct")] for t in trips]


def trips_summary(sheet: TearSheet) -> str:
    """The round trips in aggregate, one static table."""
    s = sheet.round_trip_summary
    return table(["", "value"], [
        ["Round trips (closed)", f"{s.n} ({s.n_closed})"],
        ["Long / short", f"{s.n_long} / {s.n_short}"],
        ["Win rate (closed)", format_number(s.win_rate, "pct")],
        ["Average net P&L", format_number(s.avg_net_pnl, "money")],
        ["Average win / loss", f"{format_number(s.avg_win, 'money')} / "
                               f"{format_number(s.avg_loss, 'money')}"],
        ["Best / worst", f"{format_number(s.best, 'money')} / {format_number(s.worst, 'money')}"],
        ["Profit factor", format_number(s.profit_factor)],
        ["Average hours held", format_number(s.avg_hours)],
        ["Net P&L of all trips", format_number(s.net_pnl, "money")]])


def trips_section(sheet: TearSheet) -> list[str]:
    summary = trips_summary(sheet)
    shown = len(sheet.round_trips)
    note = (f"{sheet.n_round_trips} round trips"
            + (f"; the first {shown} are listed (tearsheet.json holds the same)"
               if sheet.n_round_trips > shown else ""))
    return ["<h2>Round trips</h2>",
            '<p class="note">Per symbol, from flat back to flat (a flip closes one trip and '
            "opens the next), fills matched FIFO; an open trip is marked at the last close. "
            f"{html.escape(note)}.</p>", summary,
            paged("pitwall-trips", ["Symbol", "Side", "Opened", "Closed", "Fills", "Max qty",
                                    "Entry", "Exit", "P&L", "Costs", "Net P&L", "Return"],
                  list(range(4, 12)), trip_rows(sheet.round_trips))]


def fills_section(trades: pl.DataFrame | None, n_trades: int) -> list[str]:
    if trades is None:
        return []
    shown = trades.sort("ts", "symbol", maintain_order=True).head(MAX_FILL_ROWS)
    note = (f"{trades.height} fills ({n_trades} rebalances above the trade threshold)"
            + (f"; the first {MAX_FILL_ROWS} in time are listed, all are in trades.parquet"
               if trades.height > MAX_FILL_ROWS else ""))
    rows = [[_cell(v) for v in row] for row in shown.iter_rows()]
    numeric = [i for i, dtype in enumerate(shown.dtypes) if dtype.is_numeric()]
    return ["<h2>Fills</h2>", f'<p class="note">{html.escape(note)}</p>',
            paged("pitwall-fills", shown.columns, numeric, rows)]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}"
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y-%m-%d %H:%M:%S"))
    return str(value)


def panel_html(sheet: TearSheet, costs: Costs | None, execution: Execution | None) -> str:
    """The tear sheet as the lab's backtest panel shows it under the metrics: the report's
    static sections (header, statistics, drawdown periods, best and worst days, costs,
    round trips in aggregate, attribution), folded in a ``<details>``; no scripts."""
    parts = [header_section(sheet, costs, execution), *stats_section(sheet),
             *drawdown_section(sheet), days_section(sheet),
             *costs_section(sheet, sheet.header.capital),
             "<h2>Round trips</h2>", trips_summary(sheet),
             "<h2>Attribution</h2>", attribution_table(sheet)]
    body = "".join(parts).replace("<h2>", "<h4>").replace("</h2>", "</h4>")
    return ("<details class='pitwall-tearsheet'><summary><b>Tear sheet</b> "
            f"(against {html.escape(sheet.header.benchmark)})</summary>{body}</details>")
