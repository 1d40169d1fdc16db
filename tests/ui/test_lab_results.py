"""Results in the lab, as a researcher meets them: a report opened in a lab tab (rendered,
not its source), a lookahead-flagged run shown as flagged (never a plain green success),
and a raising strategy's log shown with the notebook cell named.

One lab (the session's) and two sandbox runs: a flagged strategy that completes, and one
that raises. Screenshots of each step go to test-artifacts/ui/.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from tests.ui.conftest import ARTIFACTS, Lab

NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
IMPORTS = "import polars as pl\n\nimport pitwall\n"
# Next bar's return decides the weight: the audit flags it, and it trades every minute.
PEEK = """@pitwall.vectorized
def peek(bars: pl.DataFrame) -> pl.DataFrame:
    c = pl.col("close")
    ahead = (c.shift(-1) / c - 1).over("symbol").sign().fill_null(0.0)
    return bars.select("ts", "symbol", weight=ahead * 0.5)
"""
RAISING = """@pitwall.vectorized
def broken(bars: pl.DataFrame, window: int = 0) -> pl.DataFrame:
    if window <= 0:
        raise ValueError(f"window must be > 0, got {window}")
    return bars.select("ts", "symbol", weight=pl.lit(0.0))
"""


def write_notebook(lab: Lab, name: str, *codes: str) -> None:
    cells: list[dict[str, Any]] = [{"cell_type": "markdown", "source": f"# {name}",
                                    "metadata": {}, "id": "title"}]
    cells += [{"cell_type": "code", "source": src, "metadata": {}, "outputs": [],
               "execution_count": None, "id": f"code{i}"} for i, src in enumerate(codes)]
    nb = {"cells": cells,
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
          "nbformat": 4, "nbformat_minor": 5}
    (lab.notebooks / name).write_text(json.dumps(nb))


def submit(page: Any, lab: Lab, name: str) -> str:
    """Open the notebook fresh and press Run Backtest (no cell selected); the job's id."""
    workspace = "results-" + name.removesuffix(".ipynb")
    page.goto(f"{lab.url}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab.token}")
    page.wait_for_selector(f"{NOTEBOOK} .jp-Notebook .jp-Cell")
    before = {e.get_attribute("data-id") for e in page.query_selector_all(".pitwall-job")}
    page.locator(f"{NOTEBOOK} .pitwall-run-button").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator("input[name=symbols]").fill("AAPL,MSFT")
    # No costs: the flagged run below is the one whose zero costs the panel warns about
    # (the deployment's default preset would charge some; docs/engine-conventions.md §2.3).
    dialog.locator("select[name=costs_preset]").select_option("frictionless")
    dialog.get_by_role("button", name="Run").click()
    row = page.locator(".pitwall-job.pitwall-selected")
    row.wait_for()
    job_id: str = row.get_attribute("data-id") or ""
    assert job_id and job_id not in before
    return job_id


def row(job_id: str) -> str:
    return f".pitwall-job[data-id='{job_id}']"


def test_reports_flags_and_failures_in_the_lab(page: Any, lab: Lab) -> None:
    write_notebook(lab, "peek.ipynb", IMPORTS, PEEK)
    write_notebook(lab, "raising.ipynb", IMPORTS, RAISING)
    flagged_id = submit(page, lab, "peek.ipynb")
    failed_id = submit(page, lab, "raising.ipynb")  # queued behind the first

    # A raising strategy: the panel shows its log, the traceback named by notebook cell.
    page.wait_for_selector(f"{row(failed_id)} .pitwall-status[data-status='FAILED']",
                           timeout=300_000)
    page.locator(f"{row(failed_id)} .pitwall-id").click()
    cell = page.locator(".pitwall-log .pitwall-log-cell")
    cell.wait_for(timeout=60_000)
    assert "cell 3" in cell.inner_text() and "raising.ipynb" in cell.inner_text()
    error = page.locator(".pitwall-log .pitwall-log-error").inner_text()
    assert "ValueError: window must be > 0, got 0" in error
    traceback = page.locator(".pitwall-log .pitwall-traceback").inner_text()
    assert "Cell 3, line 4, in broken" in traceback and "runner.py" not in traceback
    page.locator(".pitwall-log").screenshot(path=str(ARTIFACTS / "results-failed-log.png"))
    page.screenshot(path=str(ARTIFACTS / "results-failed-panel.png"))

    # The flagged run: completed, but never shown as a plain success.
    flagged = page.locator(row(flagged_id))
    page.wait_for_selector(f"{row(flagged_id)} .pitwall-status[data-status='COMPLETED']",
                           timeout=300_000)
    job = json.loads(lab.api(f"v1/backtests/{flagged_id}"))
    assert job["metrics"]["lookahead"]["status"] == "flagged"
    flagged.locator(".pitwall-audit[data-audit='flagged']").wait_for()
    status = flagged.locator(".pitwall-status")
    assert status.get_attribute("data-audit") == "flagged"
    assert status.evaluate("e => getComputedStyle(e).color") == "rgb(217, 48, 37)"  # not green
    flagged.locator(".pitwall-id").click()
    page.locator(".pitwall-detail .pitwall-audit[data-audit='flagged']").wait_for()
    # It trades every minute with no costs: the panel says the result means nothing.
    assert job["metrics"]["turnover"] > 100
    assert "no costs" in page.locator(".pitwall-detail .pitwall-cost-warning").inner_text()
    absurd = [k for k in ("cagr", "calmar", "profit_factor")
              if abs(job["metrics"].get(k) or 0) > 1e6]
    assert absurd  # this strategy's CAGR is astronomical
    for key in ("total_return", "sharpe", *absurd):
        shown = page.locator(f".pitwall-detail [data-metric='{key}']").inner_text()
        assert len(shown) <= 12, (key, shown)  # an absurd number is a bound, not digits
    page.screenshot(path=str(ARTIFACTS / "results-flagged-panel.png"))

    # Its tear sheet folds out under the metrics, from the run's tearsheet.json.
    with urllib.request.urlopen(f"{lab.url}/pitwall/artifacts/{flagged_id}/tearsheet.json"
                                f"?token={lab.token}", timeout=30) as resp:
        sheet = json.loads(resp.read())
    folded = page.locator(".pitwall-detail details.pitwall-tearsheet")
    folded.wait_for(timeout=60_000)
    summary = folded.locator("summary")
    assert summary.inner_text() == f"Tear sheet (against {sheet['header']['benchmark']})"
    # A fresh lab asks about Jupyter news in a toast over the panel's corner: say no.
    news = page.locator(".Toastify__toast").get_by_role("button", name="No")
    if news.count():
        news.first.click()
    summary.click()
    stats = folded.locator(".pitwall-tearsheet-stats")
    stats.wait_for()
    text = stats.inner_text()
    assert "Costs preset\tfrictionless" in text and "Value at risk (5%, 1 day)" in text
    trips = folded.locator(".pitwall-tearsheet-trips").inner_text()
    summary_of = sheet["round_trip_summary"]
    assert f"Round trips (closed)\t{summary_of['n']} ({summary_of['n_closed']})" in trips
    deepest = min(len(sheet["drawdowns"]), 5)  # this run may never close below its peak
    assert folded.locator(".pitwall-drawdowns tr").count() == (deepest + 1 if deepest else 0)
    assert ("No day closed below its peak." in folded.inner_text()) == (deepest == 0)
    page.wait_for_timeout(2_500)  # the list refreshes: what was unfolded stays unfolded
    assert page.locator(".pitwall-detail details.pitwall-tearsheet[open]").count() == 1
    page.screenshot(path=str(ARTIFACTS / "results-tearsheet.png"))

    # Its report opens in a lab tab, rendered: plotly drew the charts, the tiles are there.
    flagged.locator("button[data-action=report]").click()
    tab = page.locator(".pitwall-report-tab")
    tab.wait_for()
    frame_el = tab.locator("iframe")
    sandbox = frame_el.get_attribute("sandbox") or ""
    assert "allow-scripts" in sandbox and "allow-same-origin" not in sandbox
    assert "/pitwall/report/" in (frame_el.get_attribute("src") or "")
    report = page.frame_locator(".pitwall-report-tab iframe")
    report.locator("#pitwall-equity .main-svg").first.wait_for(timeout=60_000)
    assert report.locator("#pitwall-equity .scatterlayer .trace").count() >= 2
    assert report.locator("#verdict[data-audit='flagged']").inner_text().strip() \
        .endswith("LOOKAHEAD FLAGGED")
    assert "Turnover" in report.locator("#cost-warning").inner_text()
    labels = report.locator(".metric .k").all_inner_texts()
    assert "Sharpe" in labels and "CAGR" in labels
    body = report.locator("body").inner_text()
    assert "<html" not in body  # rendered, not shown as source
    assert body.startswith("Tear sheet: strategy.py:peek"), body[:200]
    # No tile is wider than its box.
    overflowing = report.locator(".metric .v").evaluate_all(
        "els => els.filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.textContent)")
    assert overflowing == []
    page.screenshot(path=str(ARTIFACTS / "results-report-tab.png"))
