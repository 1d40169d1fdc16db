"""``%%backtest`` and its panel in a real IPython kernel, and ``pitwall.Client`` against a
live embedded API (one worker thread, real gVisor sandbox)."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import polars as pl
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from pitwall.bundle import build_bundle
from pitwall.engine.tearsheet_page import panel_html
from pitwall.models import BacktestSpec, JobStatus, TearSheet
from pitwall.notebook.client import Client
from pitwall_executor.config import load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.jobs.researchers import create_researcher
from pitwall_executor.orchestration.embedded import EmbeddedServer
from pitwall_executor.stack import Stack

SYMBOLS = ["AAPL", "MSFT", "AMZN"]
START, END = dt.date(2024, 3, 4), dt.date(2024, 3, 15)
SMA = (Path(__file__).resolve().parents[2] / "examples" / "sma_crossover.py").read_text()
SLOW = """import time
import polars as pl
import pitwall


@pitwall.vectorized
def slow(bars):
    time.sleep(120)
    return bars.select("ts", "symbol", weight=pl.lit(0.0))
"""


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("pitwall")
    root.chmod(0o755)  # the sandbox runs as uid 65534: it must read the lake
    config = load_config(data_dir=root)
    generate_dataset(Catalog(config.lake_dir), "sample", symbols=SYMBOLS, start=START,
                     end=END, seed=7)
    stack = Stack.from_config(config)
    server = EmbeddedServer(stack, workers=1).start()
    try:
        yield server.url, create_researcher(stack.store, "ada")
    finally:
        server.stop()


def _spec(**params: int) -> BacktestSpec:
    return BacktestSpec(dataset="sample", universe=SYMBOLS, start=START, end=END,
                        params=dict(params))


def _printed(nb: nbformat.NotebookNode) -> dict[str, str]:
    """``key value`` lines printed by the notebook, as a dict."""
    lines = (line for cell in nb.cells if cell.cell_type == "code"
             for out in cell.get("outputs", []) for line in out.get("text", "").splitlines())
    return dict(line.split(" ", 1) for line in lines if " " in line)


MAGIC_CELLS = [
    "%load_ext pitwall",
    "import polars as pl\nimport pitwall\n\nSLOW_WINDOW = 30\n\n\n"
    "def long_when_above(bars, fast):\n"
    "    c = pl.col('close')\n"
    "    up = (c.rolling_mean(fast) > c.rolling_mean(SLOW_WINDOW)).over('symbol')\n"
    "    return bars.select('ts', 'symbol',\n"
    "                       weight=pl.when(up.fill_null(False)).then(1 / 3).otherwise(0.0))",
    f"%%backtest --symbols {','.join(SYMBOLS)} --start {START} --end {END} --param fast=5\n"
    "@pitwall.vectorized\n"
    "def strategy(bars, fast=10):\n"
    "    return long_when_above(bars, fast)",
    "panel = _\n"
    "print('waited', panel.done.wait(120))\n"
    "print('job', panel.job_id)\n"
    "print('status', panel.view.status.value)\n"
    "print('metrics', panel.metrics.value)\n"
    "print('points', len(panel.figure.data[0].x))\n"
    "print('last_equity', panel.figure.data[0].y[-1])\n"
    "print('report', panel.report.value)\n"
    "import hashlib\n"
    "print('tearsheet', hashlib.sha256(panel.tearsheet.value.encode()).hexdigest())",
    # the Client works inside a cell too (the kernel's own event loop is running there)
    "events = pitwall.Client().events(panel.job_id)\n"
    # the last status event (an ``artifacts`` event may follow it: the report is written
    # after the commit, docs/architecture.md §2)
    "print('events', len(events), [e for e in events if e.status][-1].status.value)",
]


def test_backtest_magic_panel_in_a_real_kernel(api: tuple[str, str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    url, token = api
    monkeypatch.setenv("PITWALL_API_URL", url)  # the kernel inherits the test's environment
    monkeypatch.setenv("PITWALL_TOKEN", token)
    cells = [new_code_cell(src) for src in MAGIC_CELLS]  # type: ignore[no-untyped-call]
    nb = new_notebook(cells=cells)  # type: ignore[no-untyped-call]
    NotebookClient(nb, timeout=180, kernel_name="python3").execute()
    printed = _printed(nb)
    assert printed["waited"] == "True" and printed["status"] == "COMPLETED", printed
    panel_outputs = [out for out in nb.cells[2].outputs if out.output_type == "display_data"]
    assert any("application/vnd.jupyter.widget-view+json" in out.get("data", {})
               for out in panel_outputs), nb.cells[2].outputs
    with Client(url, token) as client:
        view = client.get(printed["job"])
        equity = client.equity(view.id)
    assert view.status is JobStatus.COMPLETED and view.spec.params == {"fast": 5}
    assert view.metrics is not None
    assert f"<th>Sharpe</th><td>{view.metrics.sharpe:.3f}</td>" in printed["metrics"]
    assert int(printed["points"]) == equity.height > 0
    assert float(printed["last_equity"]) == equity["equity"][-1]
    assert "report" in printed["report"] and "sig=" in printed["report"]
    # The tear sheet under the metrics is the run's tearsheet.json, rendered as the report's
    # static sections (benchmark-relative statistics, drawdowns, costs, round trips, ...).
    with Client(url, token) as client:
        sheet = TearSheet.model_validate_json(client.artifact(view.id, "tearsheet.json"))
    shown = panel_html(sheet, view.spec.costs, view.spec.execution)
    assert "Drawdown periods" in shown and "Round trips" in shown and "Costs preset" in shown
    assert printed["tearsheet"] == hashlib.sha256(shown.encode()).hexdigest()
    n_events, last_status = printed["events"].split()
    assert int(n_events) >= 2 and last_status == "COMPLETED"


def test_client_submit_list_wait_equity_rerun(api: tuple[str, str]) -> None:
    url, token = api
    bundle = build_bundle({"strategy.py": SMA}, entrypoint="strategy.py")
    with Client(url, token) as client:
        job_id = client.submit(bundle, _spec(fast=5, slow=30))
        assert job_id in {view.id for view in client.list()}
        view = client.wait(job_id, timeout=120)
        assert view.status is JobStatus.COMPLETED, view.reason
        assert job_id in {v.id for v in client.list(status=JobStatus.COMPLETED)}
        equity = client.equity(job_id)
        raw = client.artifact(job_id, "equity.parquet")
        assert equity.equals(pl.read_parquet(io.BytesIO(raw))) and equity.height > 0
        assert view.metrics is not None
        assert equity["equity"][-1] == pytest.approx(view.metrics.final_equity)
        events = client.events(job_id)
        assert [e for e in events if e.status][-1].status is JobStatus.COMPLETED
        assert [e.seq for e in events] == sorted(e.seq for e in events)
        logs = client.logs(job_id)  # an empty log reads as "", not "None"
        assert isinstance(logs, str) and logs != "None"
        again = client.wait(client.rerun(job_id), timeout=120)
        assert again.id != job_id and again.status is JobStatus.COMPLETED
        assert again.metrics == view.metrics and again.data_version == view.data_version
        assert client.artifact(again.id, "equity.parquet") == raw


def test_client_cancels_a_slow_job(api: tuple[str, str]) -> None:
    url, token = api
    bundle = build_bundle({"strategy.py": SLOW}, entrypoint="strategy.py")
    with Client(url, token) as client:
        job_id = client.submit(bundle, _spec())
        deadline = time.monotonic() + 60
        while client.get(job_id).status is JobStatus.PENDING and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.get(job_id).status is JobStatus.RUNNING  # cancel a job in its sandbox
        client.cancel(job_id)
        view = client.wait(job_id, timeout=60)
    assert view.status is JobStatus.CANCELLED, (view.status, view.reason)
