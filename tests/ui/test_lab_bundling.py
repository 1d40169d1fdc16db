"""The Run Backtest button runs the notebook's strategy, whatever cell is active
(docs/notebooks.md), and a `pitwall run` of the same machine shows in the same panel."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.cli_kit import pitwall
from tests.ui.conftest import ARTIFACTS, Lab
from tests.ui.test_lab import NOTEBOOK, open_notebook, status

from pitwall_executor.config import researcher_name


def _cell(source: str, kind: str = "code", cid: str = "") -> dict[str, Any]:
    cell: dict[str, Any] = {"cell_type": kind, "source": source, "metadata": {},
                            "id": cid or f"c{abs(hash(source)) % 10**8}"}
    if kind == "code":
        cell.update(outputs=[], execution_count=None)
    return cell


STRATEGY = ("@pitwall.vectorized\ndef half(bars: pl.DataFrame) -> pl.DataFrame:\n"
            "    return bars.select('ts', 'symbol', weight=pl.lit(WEIGHT))\n")
# A notebook as a researcher leaves it: a title first (the active cell when opened), a
# quick local check with pitwall.backtest and a plot after the strategy.
CELLS = [
    _cell("# Half in\nHold half the book.", kind="markdown", cid="title"),
    _cell("import polars as pl\nimport pitwall\n", cid="imports"),
    _cell("WEIGHT = 0.5\n", cid="constants"),
    _cell(STRATEGY, cid="strategy"),
    _cell("result = pitwall.backtest(half, bars)\nresult.equity.plot()\n", cid="quick"),
]


def _write(lab: Lab, name: str, cells: list[dict[str, Any]]) -> None:
    book = {"cells": cells, "nbformat": 4, "nbformat_minor": 5,
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}}}
    (lab.notebooks / name).write_text(json.dumps(book))


def _job(lab: Lab, job_id: str) -> dict[str, Any]:
    view: dict[str, Any] = json.loads(lab.api(f"v1/backtests/{job_id}"))
    return view


def test_a_fresh_notebook_runs_its_strategy_and_a_cli_run_shows_in_the_panel(
        page: Any, lab: Lab) -> None:
    # Two strategies: refused before any dialog, saying what to do.
    _write(lab, "two.ipynb", [*CELLS, _cell(STRATEGY.replace("half", "other"))])
    open_notebook(page, lab, "two.ipynb")
    page.locator(f"{NOTEBOOK} .pitwall-run-button").click()
    refused = page.locator(".jp-Dialog")
    refused.wait_for()
    text = refused.inner_text()
    assert "Backtest refused" in text and "2 strategies" in text and "pitwall:strategy" in text
    assert refused.locator("input[name=symbols]").count() == 0
    page.screenshot(path=str(ARTIFACTS / "bundling-1-two-strategies-refused.png"))
    refused.get_by_role("button").last.click()

    # Freshly opened: the title is the active cell and nothing is selected by hand.
    _write(lab, "half.ipynb", CELLS)
    open_notebook(page, lab, "half.ipynb")
    page.locator(f"{NOTEBOOK} .pitwall-run-button").click()
    dialog = page.locator(".jp-Dialog")
    dialog.locator(".pitwall-preview").wait_for()
    preview = dialog.locator(".pitwall-preview").inner_text()
    assert "Runs half (vectorized engine)" in preview, preview
    inside = dialog.locator(".pitwall-preview-cell[data-in='true']")
    assert [inside.nth(i).get_attribute("data-role") for i in range(inside.count())] == [
        "dependency", "dependency", "strategy"]
    assert "cell 5: local" in dialog.locator(
        ".pitwall-preview-cell[data-in='false']").inner_text()
    assert "docs/notebooks.md" in preview
    page.screenshot(path=str(ARTIFACTS / "bundling-2-dialog-preview.png"))
    dialog.locator("input[name=symbols]").fill("AAPL")
    dialog.locator("input[name=end]").fill("2024-03-05")
    dialog.get_by_role("button", name="Run").click()
    row = page.locator(".pitwall-job.pitwall-selected")
    row.wait_for()
    job_id = row.get_attribute("data-id") or ""
    page.wait_for_selector(status(job_id, "COMPLETED"), timeout=180_000)
    page.screenshot(path=str(ARTIFACTS / "bundling-3-completed.png"))
    button_job = _job(lab, job_id)
    assert button_job["status"] == "COMPLETED" and button_job["spec"]["engine"] == "vectorized"

    # A CLI run on the lab's data dir goes to the lab's stack, as the same researcher.
    strategy = lab.notebooks / "cli_strategy.py"
    strategy.write_text("import polars as pl\nimport pitwall\n\nWEIGHT = 0.25\n\n" + STRATEGY)
    res = pitwall(lab.data_dir, "run", str(strategy), "--symbols", "MSFT", "--start",
                  "2024-03-04", "--end", "2024-03-05", "--no-audit", "--json")
    assert res.exit_code == 0, res.output
    cli_job = json.loads(res.output[res.output.index("{"):])
    assert cli_job["status"] == "COMPLETED"
    assert cli_job["researcher"] == button_job["researcher"] == researcher_name()
    page.wait_for_selector(f".pitwall-job[data-id='{cli_job['id']}']", timeout=30_000)
    page.wait_for_selector(status(cli_job["id"], "COMPLETED"))
    page.screenshot(path=str(ARTIFACTS / "bundling-4-cli-run-in-panel.png"))
