"""Report artifacts: byte-identical reruns and escaping of strategy-controlled strings."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from engine_bars import make_bars, make_weights, minute

from pitwall.engine import compute_metrics, run_vectorized, write_report
from pitwall.engine.report import (
    PLOT_DIV_ID,
    SHORT_DAYS,
    cost_warning,
    format_metrics,
    format_number,
    period,
)
from pitwall.models import AuditFinding, Costs, LookaheadAudit

PAYLOAD = "<script>alert('pwned')</script>"
MANIFEST = {
    "bundle_sha256": "ab" * 32,
    "dataset": "us_equities@12",
    "entrypoint": f"evil{PAYLOAD}",
    "parameters": {"fast": 30, "note": PAYLOAD},
    "seed": 7,
    "sdk_version": "0.1.0",
}

SCRIPT = """
import sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from test_engine_report import _write
_write(Path(sys.argv[1]))
"""


EVIL_SYMBOL = "<img src=x onerror=alert(1)>"
FLAGGED = LookaheadAudit(
    status="flagged", tolerance=1e-12, cuts_checked=[minute(2)],
    first=AuditFinding(cut=minute(2), ts=minute(1), symbol=EVIL_SYMBOL, full=0.5,
                       truncated=0.25, n_differences=3),
    notes=[f"cut x: not checked, ValueError: {PAYLOAD}"],
)


def _write(out: Path, audit: LookaheadAudit | None = FLAGGED) -> list[Path]:
    bars = make_bars({"A": [(10, 11), (11, 12), (12, 11), (11, 13)],
                      EVIL_SYMBOL: [(5, 5), (5, 6), (6, 6), (6, 5)]})
    weights = make_weights([(0, "A", 0.6), (0, EVIL_SYMBOL, 0.4), (2, EVIL_SYMBOL, -0.2)])
    result = run_vectorized(bars, weights, capital=1e5, costs=Costs(commission_bps=1))
    metrics = compute_metrics(result).model_copy(update={"lookahead": audit})
    paths = write_report(out, result=result, metrics=metrics, manifest=MANIFEST, bars=bars,
                         benchmark=EVIL_SYMBOL)
    return list(paths.files)


def _digests(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_two_writes_are_byte_identical_even_across_processes(tmp_path: Path) -> None:
    first = _write(tmp_path / "one")
    second = _write(tmp_path / "two")
    assert _digests(first) == _digests(second)
    subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "three"),
                    str(Path(__file__).parent)], check=True)
    third = [tmp_path / "three" / p.name for p in first]
    assert _digests(first) == _digests(third)


def test_artifact_contents(tmp_path: Path) -> None:
    metrics_json, parquet, positions, trades, sheet, report = _write(tmp_path)
    assert pl.read_parquet(trades).height == pl.read_parquet(trades).unique().height > 0
    assert pl.read_parquet(positions).height > 0
    text = metrics_json.read_text()
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert data["n_bars"] == 4
    assert data["lookahead"]["status"] == "flagged"
    assert data["lookahead"]["first"]["ts"] == "2024-01-02T14:31:00Z"
    equity = pl.read_parquet(parquet)
    assert equity.columns == ["ts", "equity", "gross_exposure", "net_exposure", "turnover", "cost"]
    assert equity.schema["ts"] == pl.Datetime("us", "UTC")
    assert pq.read_metadata(parquet).metadata is None  # no writer-time key/values
    page = report.read_text()
    assert f'id="{PLOT_DIV_ID}"' in page
    # plotly.js (its basic bundle, a megabyte) is inlined, nothing is fetched from a CDN
    assert "<script src=" not in page and len(page) > 1_000_000
    assert page.count("window.Plotly = Plotly") == 1  # one copy
    assert "us_equities@12" in page and "ab" * 32 in page
    tearsheet = json.loads(sheet.read_text())
    assert tearsheet["header"]["benchmark"] == EVIL_SYMBOL
    assert tearsheet["n_symbols_traded"] == 2 and tearsheet["net_pnl"] == pytest.approx(
        data["final_equity"] - 1e5, rel=1e-12)


def test_strategy_strings_are_escaped(tmp_path: Path) -> None:
    page = _write(tmp_path)[-1].read_text()
    assert PAYLOAD not in page and EVIL_SYMBOL not in page
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    assert "evil&lt;script&gt;" in page
    # the symbol in the audit banner, the benchmark note and the attribution table
    assert page.count("&lt;img src=x onerror=alert(1)&gt;") >= 3
    # in the figures' and the paged tables' JSON a symbol is escaped: the JSON cannot
    # close its script, and the tables set it as text, never as markup
    scripts = [s.split("</script>")[0] for s in page.split("<script>")[2:]]
    assert any("\\u003cimg src=x onerror" in body for body in scripts)
    assert all("<" not in body for body in scripts)
    assert "innerHTML" not in page.split("</head>")[0].split("window.Plotly = Plotly")[-1]


def test_page_sections_and_banners(tmp_path: Path) -> None:
    page = _write(tmp_path / "flagged")[-1].read_text()
    assert 'class="banner flagged"' in page and "lookahead audit flagged" in page
    for div in ("pitwall-equity", "pitwall-exposure", "pitwall-annual", "pitwall-distribution",
                "pitwall-attribution", "pitwall-trips", "pitwall-fills"):
        assert f'id="{div}"' in page
    assert "<h2>Fills</h2>" in page and "<h2>Manifest</h2>" in page
    assert "<h2>Round trips</h2>" in page and "<h2>Costs</h2>" in page
    assert '"name":"benchmark"' in page  # the benchmark trace
    clean = LookaheadAudit(status="no_lookahead_found", tolerance=1e-12,
                           cuts_checked=[minute(2)], coverage={"random": 1})
    page = _write(tmp_path / "clean", clean)[-1].read_text()
    assert 'class="banner no_lookahead_found"' in page
    assert "no lookahead found at 1 cuts (1 random bars)" in page
    page = _write(tmp_path / "none", None)[-1].read_text()
    assert 'class="banner not_run"' in page


def test_period_is_short_only_past_a_week_inside_either_end() -> None:
    first, last = dt.date(2024, 3, 4), dt.date(2024, 3, 15)
    text, short = period(first, last, 10, (dt.date(2024, 3, 1), dt.date(2024, 3, 17)))
    assert (text, short) == ("2024-03-04 to 2024-03-15, 10 trading days", False)
    assert not period(first, last, 10, (first - dt.timedelta(SHORT_DAYS), last))[1]
    text, short = period(first, last, 10, (first - dt.timedelta(SHORT_DAYS + 1), last))
    assert short and "asked 2024-02-25 to 2024-03-15" in text
    assert period(first, last, 10, (first, last + dt.timedelta(SHORT_DAYS + 1)))[1]


def test_the_page_states_the_period_and_warns_when_the_bars_fall_short(tmp_path: Path) -> None:
    bars = make_bars({"A": [(10, 11), (11, 12)]})
    result = run_vectorized(bars, make_weights([(0, "A", 1.0)]), capital=1e5, costs=Costs())
    metrics = compute_metrics(result)
    day = minute(0).date()
    covered = write_report(tmp_path / "covered", result=result, metrics=metrics, manifest={},
                           asked=(day, day)).report_html.read_text()
    assert f'<p class="note" id="period">Period: {day} to {day}, 1 trading day.</p>' in covered
    asked = (day - dt.timedelta(days=365), day)
    short = write_report(tmp_path / "short", result=result, metrics=metrics, manifest={},
                         asked=asked).report_html.read_text()
    assert '<div class="banner warn" id="period">' in short and f"asked {asked[0]}" in short


def test_absurd_numbers_are_bounds_not_digits() -> None:
    assert format_number(1.6976393068436455e18, "spct") == ">1e6 %"  # the CAGR of issue 18
    assert format_number(-3e4, "pct") == "<-1e6 %"
    assert format_number(1.7976931348623157e308) == ">1e6"  # a profit factor at DBL_MAX
    assert format_number(2e7, "x") == ">1e6x"
    assert [format_number(v) for v in (float("inf"), float("-inf"), float("nan"))] == \
        ["inf", "-inf", "nan"]
    assert format_number(None) == "–"
    assert format_number(1e300, "money") == "1.000e+300"
    # Ordinary numbers keep the usual formats.
    assert format_number(0.1234, "spct") == "+12.34%" and format_number(0.05, "pct") == "5.00%"
    assert format_number(1.23456) == "1.235" and format_number(12.345, "x") == "12.35x"
    assert format_number(1234567.891, "money") == "1,234,567.89"
    assert format_number(17, "int") == "17" and format_number(3.0, "days") == "3"


def test_format_metrics_keeps_every_value_short_and_warns_on_free_turnover(
        tmp_path: Path) -> None:
    bars = make_bars({"A": [(10, 11), (11, 12), (12, 11), (11, 13)]})
    result = run_vectorized(bars, make_weights([(0, "A", 1.0), (2, "A", -1.0)]), capital=1e5,
                            costs=Costs())
    base = compute_metrics(result)
    absurd = base.model_copy(update={"cagr": 1.6976393068436455e18, "sharpe": 75.1,
                                     "profit_factor": 1.7976931348623157e308,
                                     "turnover": 12_345.0})
    rows = dict(format_metrics(absurd))
    assert rows["CAGR"] == ">1e6 %" and rows["Profit factor"] == ">1e6"
    assert rows["Turnover (annual)"] == "12345.00x"
    assert all(len(text) <= 16 for label, text in rows.items() if label != "Final equity")
    warning = cost_warning(absurd, Costs())
    assert warning is not None and "12345.00x" in warning and "no costs" in warning
    assert cost_warning(absurd, Costs(spread_bps=2)) is None
    assert cost_warning(absurd, Costs(spread_model="range")) is None  # the range is a cost
    assert cost_warning(base.model_copy(update={"turnover": 50.0}), Costs()) is None
    page = write_report(tmp_path, result=result, metrics=absurd.model_copy(
        update={"lookahead": FLAGGED}), manifest={"spec": {"costs": {}}}).report_html
    text = page.read_text()
    assert '<span class="badge flagged" id="verdict" data-audit="flagged">' in text
    assert 'id="cost-warning"' in text and "&gt;1e6 %" in text  # the CAGR tile
    assert "169763930684364" not in text
