"""Run Backtest from a notebook in a real browser, watch it complete, and cancel one."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from tests.strategies import slow_event
from tests.ui.conftest import ARTIFACTS, Lab

from pitwall_executor.datalake.market_calendar import trading_minutes

SLOW = """import time
import polars as pl
import pitwall


@pitwall.vectorized
def slow(bars: pl.DataFrame) -> pl.DataFrame:
    time.sleep(300)
    return bars.select("ts", "symbol", weight=pl.lit(0.0))
"""


SLOW_EVENT = slow_event(0.01)

NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden)"
# The number of points of the panel's chart, or false; "final" once the job completed.
POINTS_JS = """(kind) => {
  const chart = document.querySelector('.pitwall-equity');
  const n = chart && chart.data && chart.data[0] ? chart.data[0].y.length : 0;
  return chart && chart.dataset.plot === kind && n > 0 ? n : false;
}"""


def open_notebook(page: Any, lab: Lab, name: str) -> None:
    # A workspace of its own per notebook: JupyterLab would otherwise restore other tabs.
    workspace = name.removesuffix(".ipynb")
    page.goto(f"{lab.url}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab.token}")
    page.wait_for_selector(f"{NOTEBOOK} .pitwall-run-button")
    page.wait_for_selector(f"{NOTEBOOK} .jp-Notebook .jp-Cell")


def status(job_id: str, value: str) -> str:
    return f".pitwall-job[data-id='{job_id}'] .pitwall-status[data-status='{value}']"


def write_notebook(lab: Lab, name: str, source: str) -> None:
    nb = {"cells": [{"cell_type": "code", "source": source, "metadata": {}, "outputs": [],
                     "execution_count": None, "id": "strategy"}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
          "nbformat": 4, "nbformat_minor": 5}
    (lab.notebooks / name).write_text(json.dumps(nb))


def run_backtest(page: Any, cell_index: int, **fields: str) -> str:
    page.locator(f"{NOTEBOOK} .jp-Notebook .jp-Cell").nth(cell_index).click()
    page.locator(f"{NOTEBOOK} .pitwall-run-button").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator("input[name=symbols]").fill("AAPL,MSFT")
    for name, value in fields.items():
        if name == "engine":
            dialog.locator("select[name=engine]").select_option(value)
        else:
            dialog.locator(f"input[name={name}]").fill(value)
    dialog.get_by_role("button", name="Run").click()
    row = page.locator(".pitwall-job.pitwall-selected")
    row.wait_for()
    job_id: str = row.get_attribute("data-id") or ""
    assert job_id
    return job_id


def test_run_backtest_button_shows_the_api_result(page: Any, lab: Lab) -> None:
    open_notebook(page, lab, "sma_crossover.ipynb")
    job_id = run_backtest(page, cell_index=1)  # the strategy cell
    page.wait_for_selector(status(job_id, "COMPLETED"), timeout=180_000)
    page.wait_for_selector(".pitwall-equity.js-plotly-plot .scatterlayer .js-line",
                           state="attached")
    page.screenshot(path=str(ARTIFACTS / "run-backtest-completed.png"), full_page=True)
    job = json.loads(lab.api(f"v1/backtests/{job_id}"))
    assert job["status"] == "COMPLETED"
    assert job["spec"]["universe"] == ["AAPL", "MSFT"]
    shown = page.locator("[data-metric='sharpe']").inner_text()
    assert shown == f"{job['metrics']['sharpe']:.3f}"
    points = page.evaluate("() => document.querySelector('.pitwall-equity.js-plotly-plot')"
                           ".data[0].y.length")
    assert points > 100


def test_a_refused_bundle_names_the_cell(page: Any, lab: Lab) -> None:
    nb = json.loads((lab.notebooks / "sma_crossover.ipynb").read_text())
    nb["cells"][1]["source"] = "!pip install something\n" + "".join(nb["cells"][1]["source"])
    (lab.notebooks / "refused.ipynb").write_text(json.dumps(nb))
    open_notebook(page, lab, "refused.ipynb")
    page.locator(f"{NOTEBOOK} .jp-Notebook .jp-Cell").nth(1).click()
    page.locator(f"{NOTEBOOK} .pitwall-run-button").click()  # refused before the dialog
    error = page.locator(".jp-Dialog-body").filter(has_text="cell 2")
    error.wait_for()
    assert "shell escapes" in error.inner_text()
    page.screenshot(path=str(ARTIFACTS / "bundle-refused.png"))


def test_cancel_a_running_job_from_the_panel(page: Any, lab: Lab) -> None:
    write_notebook(lab, "slow.ipynb", SLOW)
    open_notebook(page, lab, "slow.ipynb")
    job_id = run_backtest(page, cell_index=0)
    row = page.locator(f".pitwall-job[data-id='{job_id}']")
    page.wait_for_selector(status(job_id, "RUNNING"), timeout=120_000)
    row.locator("button[data-action=cancel]").click()
    page.wait_for_selector(status(job_id, "CANCELLED"), timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "cancelled.png"), full_page=True)
    assert json.loads(lab.api(f"v1/backtests/{job_id}"))["status"] == "CANCELLED"


def test_the_equity_curve_grows_while_an_event_job_runs(page: Any, lab: Lab) -> None:
    write_notebook(lab, "slow_event.ipynb", SLOW_EVENT)
    open_notebook(page, lab, "slow_event.ipynb")
    job_id = run_backtest(page, cell_index=0, engine="event", start="2024-03-04",
                          end="2024-03-05")
    # The running curve (from the events WebSocket) has points before the job completed...
    first = page.wait_for_function(POINTS_JS, arg="live", timeout=180_000).json_value()
    # ...and more of them later, still before completion: "final" first fails the wait.
    grown = page.wait_for_function("""(n) => {
      const chart = document.querySelector('.pitwall-equity');
      if (chart.dataset.plot === 'final') {
        throw new Error(`the job completed before the running curve grew past ${n} points`);
      }
      const now = chart.dataset.plot === 'live' ? chart.data[0].y.length : 0;
      return now > n ? now : false;
    }""", arg=first, timeout=120_000).json_value()
    assert grown > first > 0
    page.screenshot(path=str(ARTIFACTS / "equity-running.png"), full_page=True)
    progress = page.locator(f".pitwall-job[data-id='{job_id}'] progress").get_attribute("value")
    assert progress is not None and int(progress) > 10  # moved by the progress events
    # On completion the full curve of the equity artifact replaces the running one.
    page.wait_for_selector(status(job_id, "COMPLETED"), timeout=180_000)
    final = page.wait_for_function(POINTS_JS, arg="final", timeout=60_000).json_value()
    equity = json.loads(lab.api(f"v1/backtests/{job_id}"))
    assert equity["status"] == "COMPLETED" and equity["spec"]["engine"] == "event"
    assert final == trading_minutes(dt.date(2024, 3, 4), dt.date(2024, 3, 5)) >= grown
