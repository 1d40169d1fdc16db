"""The tutorial notebook as a researcher meets it: opened in the lab, Run All, and the
``%%backtest`` panel shows the completed sandboxed run with its metrics
(docs/notebooks.md). The lab fixture copies ``notebooks/sma_crossover.ipynb`` into the
lab's root; its kernel reaches the lab's embedded API through the variables the Pitwall
server extension sets."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from tests.ui.conftest import ARTIFACTS, Lab
from tests.ui.test_lab import NOTEBOOK, open_notebook

OUTPUT = f"{NOTEBOOK} .jp-OutputArea-output"


def start_kernel(page: Any) -> None:
    """Accept the kernel the notebook names when the lab asks which one to start."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    ask = page.locator(".jp-Dialog", has_text="Select Kernel")
    with contextlib.suppress(PlaywrightTimeout):  # the lab may start it without asking
        ask.get_by_role("button", name="Select").click(timeout=20_000)


def run_all(page: Any) -> None:
    """Run → Run All Cells, from the lab's menu bar."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def test_sma_crossover_notebook_runs_all_and_its_panel_completes(page: Any, lab: Lab) -> None:
    open_notebook(page, lab, "sma_crossover.ipynb")
    start_kernel(page)
    run_all(page)
    # The panel's status reaches COMPLETED, then its metrics table and its equity chart.
    panel_status = page.locator(f"{OUTPUT} .pitwall-status[data-status='COMPLETED']")
    panel_status.wait_for(timeout=300_000)
    sharpe_cell = page.locator(f"{OUTPUT} table.pitwall-metrics tr",
                               has=page.locator("th", has_text="Sharpe")).locator("td")
    sharpe_cell.first.wait_for(timeout=60_000)
    page.locator(f"{OUTPUT} .js-plotly-plot .scatterlayer .js-line").first.wait_for(
        state="attached", timeout=60_000)
    # The last cell reads the official run back with pitwall.Client and compares.
    verdict = page.locator(OUTPUT, has_text="local and official agree:")
    verdict.wait_for(timeout=300_000)
    text = verdict.inner_text()
    assert "local and official agree: True" in text, text
    job_id = text.split("job=")[1].split()[0]
    job = json.loads(lab.api(f"v1/backtests/{job_id}"))
    assert job["status"] == "COMPLETED" and job["spec"]["universe"] == ["AAPL", "AMZN", "MSFT"]
    assert sharpe_cell.first.inner_text() == f"{job['metrics']['sharpe']:.3f}"
    panel = page.locator(OUTPUT, has=page.locator(".pitwall-status[data-status='COMPLETED']"))
    assert job_id in panel.first.inner_text()
    panel_status.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "notebook-sma-crossover-run-all.png"))
