"""The ``%%backtest`` panel's equity curve grows from the job's progress events while it
runs (a live embedded API, one worker thread, the real gVisor sandbox), then the full
curve replaces it."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest
from tests.strategies import slow_event

from pitwall.bundle import build_bundle
from pitwall.models import BacktestSpec, EngineKind, JobStatus
from pitwall.notebook.client import Client
from pitwall.notebook.widget import EQUITY_TITLE, RUNNING_TITLE, BacktestPanel
from pitwall_executor.config import load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.jobs.researchers import create_researcher
from pitwall_executor.orchestration.embedded import EmbeddedServer
from pitwall_executor.stack import Stack

SYMBOLS = ["AAPL", "MSFT"]
START, END = dt.date(2024, 3, 4), dt.date(2024, 3, 5)
SLOW_EVENT = slow_event(0.006)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("pitwall-widget")
    root.chmod(0o755)  # the sandbox runs as uid 65534: it must read the lake
    config = load_config(environ={}, data_dir=root, sandbox="gvisor")
    generate_dataset(Catalog(config.lake_dir), "sample", symbols=SYMBOLS, start=START,
                     end=END, seed=7)
    stack = Stack.from_config(config)
    server = EmbeddedServer(stack, workers=1).start()
    try:
        yield server.url, create_researcher(stack.store, "ada")
    finally:
        server.stop()


def test_the_panel_curve_grows_while_an_event_job_runs(api: tuple[str, str]) -> None:
    url, token = api
    bundle = build_bundle({"strategy.py": SLOW_EVENT}, entrypoint="strategy.py", kind="event")
    spec = BacktestSpec(dataset="sample", universe=SYMBOLS, start=START, end=END,
                        engine=EngineKind.EVENT)
    with Client(url, token) as client:
        panel = BacktestPanel(client, client.submit(bundle, spec), poll=0.2).start()
        running: list[int] = []  # points shown while the title says the curve is running
        deadline = time.monotonic() + 180
        while not panel.done.is_set() and time.monotonic() < deadline:
            shown = len(panel.figure.data[0].x or ())  # read before the title: see finish()
            if panel.figure.layout.title.text == RUNNING_TITLE:
                running.append(shown)
            time.sleep(0.02)
        assert panel.done.is_set(), "the job did not end in time"
        view = panel.view
        assert view is not None and view.status is JobStatus.COMPLETED, view
        equity = client.equity(view.id)
    assert running and running[0] > 0, "no running equity was shown before completion"
    assert max(running) > min(running), f"the running curve did not grow: {running[::20]}"
    assert running == sorted(running)  # it only grows
    assert max(running) <= equity.height
    assert panel.figure.layout.title.text == EQUITY_TITLE
    assert len(panel.figure.data[0].x) == equity.height
    assert panel.figure.data[0].y[-1] == equity["equity"][-1]
    assert panel.progress.value == 1.0 and panel.after > 2
