"""``pitwall run NOTEBOOK.ipynb``: the button's bundling rule from the CLI, through gVisor.

One real sandbox run: a notebook left in its Run-All state (a title, a quick local check
with ``pitwall.backtest``, a plot, a shell escape) whose strategy is a ``pitwall.Strategy``
subclass, run without ``--engine``: the event engine is detected, the local cells stay
out of the sandbox, the params cell gives the defaults, and the bundle maps its lines to
the notebook's cells (docs/notebooks.md).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.cli_kit import pitwall, sample_data_dir

from pitwall.bundle import load_bundle
from pitwall_executor.config import load_config, researcher_name
from pitwall_executor.stack import Stack

pytestmark = pytest.mark.sandbox

ARGS = ["--symbols", "AAPL", "--start", "2024-03-04", "--end", "2024-03-04"]


def _cell(src: str, kind: str = "code", tags: tuple[str, ...] = ()) -> dict[str, Any]:
    cell: dict[str, Any] = {"cell_type": kind, "id": f"c{abs(hash(src)) % 10**8}",
                            "metadata": {"tags": list(tags)}, "source": src}
    if kind == "code":
        cell.update(outputs=[], execution_count=None)
    return cell


NOTEBOOK = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
    _cell("# Flip\nA title: the cell active when the notebook is opened.", kind="markdown"),
    _cell("import pitwall\nfrom pitwall_executor.config import load_config\n"),
    _cell('params = {"target": 0.25}', tags=("pitwall:params",)),
    _cell("WEIGHT_SCALE = 2.0\n"),
    _cell("class Flip(pitwall.Strategy):\n    target = 0.5\n\n    def on_bar(self, ctx):\n"
          "        self.turn = not getattr(self, 'turn', False)\n"
          "        weight = self.target * WEIGHT_SCALE\n"
          "        ctx.order_target_percent(ctx.symbols[0], weight if self.turn else 0.0)\n"),
    _cell("result = pitwall.backtest(Flip, load_config().data_dir)\nresult.equity.plot()\n"),
    _cell("!ls\n"),
]}


def test_a_notebook_runs_its_strategy_from_the_cli(tmp_path_factory: pytest.TempPathFactory,
                                                   tmp_path: Path) -> None:
    data_dir = sample_data_dir(tmp_path_factory, end=dt.date(2024, 3, 5))
    book = tmp_path / "flip.ipynb"
    book.write_text(json.dumps(NOTEBOOK))
    # An engine that does not fit the strategy is refused before anything runs.
    res = pitwall(data_dir, "run", str(book), *ARGS, "--engine", "vectorized")
    assert res.exit_code != 0 and "leave --engine out" in res.output
    assert "does not fit its strategy, which runs on the event engine" in res.output

    res = pitwall(data_dir, "run", str(book), *ARGS, "--json")
    assert res.exit_code == 0, res.output
    view = json.loads(res.output[res.output.index("{"):])
    assert view["status"] == "COMPLETED", view
    assert view["spec"]["engine"] == "event" and view["spec"]["params"] == {"target": 0.25}
    assert view["researcher"] == researcher_name()
    assert view["metrics"]["n_trades"] > 0

    stack = Stack.from_config(load_config(data_dir=data_dir))
    bundle = load_bundle(stack.store.bundle(view["bundle_sha256"]))
    source = bundle.files["strategy.py"].decode()
    assert bundle.entrypoint == "strategy.py:Flip" and bundle.kind == "event"
    assert "pitwall_executor" not in source and "backtest" not in source and "!ls" not in source
    assert [s["number"] for s in bundle.manifest["cell_lines"]] == [2, 4, 5]

    listed = pitwall(data_dir, "jobs", "list")
    assert f"jobs of {data_dir}" in listed.output and view["id"] in listed.output
