from __future__ import annotations

from typing import Any

import pytest

from pitwall.bundle import load_bundle
from pitwall.errors import BundleError
from pitwall_server.bundler import NotebookBundleError, bundle_notebook, read_params

STRATEGY = ("import polars as pl\nimport pitwall\n\n@pitwall.vectorized\n"
            "def s(bars, fast=10):\n    return bars.select('ts', 'symbol', weight=pl.lit(1.0))\n")


def cell(src: str, *tags: str, kind: str = "code", cid: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"tags": list(tags)} if tags else {}
    return {"cell_type": kind, "source": src, "metadata": meta, "id": cid or f"c{abs(hash(src))}"}


def nb(*cells: dict[str, Any]) -> dict[str, Any]:
    return {"cells": list(cells), "nbformat": 4, "nbformat_minor": 5, "metadata": {}}


def test_cells_up_to_the_active_one_minus_skipped_and_markdown() -> None:
    book = nb(cell("# Title", kind="markdown"), cell("%matplotlib inline\nimport math\n"),
              cell("bars.plot()", "pitwall:skip"), cell(STRATEGY, cid="strat"),
              cell("raise SystemExit('after the active cell')"))
    built = bundle_notebook(book, active_cell=3)
    assert "import math" in built.source and "%matplotlib" not in built.source
    assert "bars.plot()" not in built.source and "SystemExit" not in built.source
    assert built.dropped == [3]
    bundle = load_bundle(built.data)
    assert bundle.manifest["source_cells"] == built.cell_ids and "strat" in built.cell_ids
    assert bundle.files["strategy.py"].decode() == built.source


def test_params_cell_is_data_not_code() -> None:
    book = nb(cell('params = {"fast": 5, "slow": 50, "name": "x"}', "pitwall:params"),
              cell(STRATEGY))
    built = bundle_notebook(book)
    assert built.params == {"fast": 5, "slow": 50, "name": "x"}
    assert "params =" not in built.source


@pytest.mark.parametrize("src, message", [
    ("params = {'a': open('/etc/passwd').read()}", "must be literals"),
    ("params = [1, 2]", "dict with string keys"),
    ("a = {'x': 1}\nb = {'y': 2}", "one assignment"),
    ("params = {'x': float('nan')}", "must be literals"),
])
def test_params_cells_that_are_not_plain_data_are_refused(src: str, message: str) -> None:
    with pytest.raises(NotebookBundleError, match=message) as info:
        read_params(src, 4)
    assert info.value.cell == 4


@pytest.mark.parametrize("line, what", [
    ("!pip install requests", "shell escapes"),
    ("files = !ls /data", "shell escapes"),
    ("%run other.py", "magic %run"),
    ("%%bash\nls", "cell magic %%bash"),
])
def test_magics_and_shell_escapes_are_refused_with_the_cell_number(line: str, what: str) -> None:
    book = nb(cell("x = 1"), cell(line), cell(STRATEGY))
    with pytest.raises(NotebookBundleError, match=what) as info:
        bundle_notebook(book)
    assert info.value.cell == 2 and str(info.value).startswith("cell 2:")


def test_syntax_errors_name_the_cell_and_empty_notebooks_are_refused() -> None:
    with pytest.raises(NotebookBundleError, match=r"cell 2: invalid Python at line 1"):
        bundle_notebook(nb(cell(STRATEGY), cell("def broken(:\n")))
    with pytest.raises(BundleError, match="no code cells"):
        bundle_notebook(nb(cell("# only prose", kind="markdown")))
    with pytest.raises(BundleError, match="outside the notebook"):
        bundle_notebook(nb(cell(STRATEGY)), active_cell=5)
