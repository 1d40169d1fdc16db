"""The one notebook bundling rule (pitwall.notebook_bundle, docs/notebooks.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pitwall.bundle import build_bundle, load_bundle
from pitwall.errors import BundleError
from pitwall.notebook_bundle import (
    NotebookBundleError,
    bundle_notebook,
    detect_strategy,
    load_notebook,
    locate,
    plan_notebook,
    read_params,
)

STRATEGY = ("import polars as pl\nimport pitwall\n\n@pitwall.vectorized\n"
            "def s(bars, fast=10):\n    return bars.select('ts', 'symbol', weight=pl.lit(1.0))\n")


def cell(src: str, *tags: str, kind: str = "code", cid: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"tags": list(tags)} if tags else {}
    return {"cell_type": kind, "source": src, "metadata": meta, "id": cid or f"c{abs(hash(src))}"}


def nb(*cells: dict[str, Any]) -> dict[str, Any]:
    return {"cells": list(cells), "nbformat": 4, "nbformat_minor": 5, "metadata": {}}


# A notebook as a researcher leaves it after Run All: a title, imports, a helper and a
# constant the strategy uses, data loaded and plotted here, the strategy, a quick check
# with engine internals, a plot of its result.
RUN_ALL = nb(
    cell("# SMA crossover\nA title.", kind="markdown", cid="title"),
    cell("%matplotlib inline\nimport polars as pl\nimport pitwall\nimport math\n"
         "from pitwall_executor.config import load_config\n", cid="imports"),
    cell("WINDOW = 3\nUNUSED = 7\n\ndef smooth(col):\n    return col.rolling_mean(WINDOW)\n",
         cid="helpers"),
    cell("bars = load_config().data_dir\nbars.plot()\n", cid="load"),
    cell("@pitwall.vectorized\ndef sma(bars, fast=10):\n"
         "    up = smooth(pl.col('close')) > pl.col('close')\n"
         "    return bars.select('ts', 'symbol', weight=pl.when(up).then(1.0).otherwise(0.0))\n",
         cid="strategy"),
    cell("result = pitwall.backtest(sma, bars)\nprint(result)\nequity = result.equity\n",
         cid="quick"),
    cell("equity.plot()\n", cid="plot"),
    cell("!pip list\n", cid="shell"),
)


def test_a_fresh_notebook_runs_its_strategy_whatever_cell_is_active() -> None:
    # Freshly opened, the active cell is the title: the bundle is the same as from any cell.
    built = bundle_notebook(RUN_ALL, active_cell=0)
    assert built.source == bundle_notebook(RUN_ALL, active_cell=7).source
    assert built.source == bundle_notebook(RUN_ALL).source
    assert built.plan.strategy == "sma" and built.kind == "vectorized"
    roles = {c.id: c.role for c in built.plan.cells}
    assert roles == {"title": "markdown", "imports": "dependency", "helpers": "dependency",
                     "load": "unused", "strategy": "strategy", "quick": "local",
                     "plot": "local", "shell": "local"}
    # The quick check, the local-only import and the data load stay out of the sandbox.
    for absent in ("pitwall.backtest", "pitwall_executor", "load_config", "bars.plot",
                   "import math", "UNUSED", "%matplotlib", "equity"):
        assert absent not in built.source, absent
    bundle = load_bundle(built.data)
    assert bundle.entrypoint == "strategy.py:sma" and bundle.kind == "vectorized"
    assert bundle.manifest["source_cells"] == ["imports", "helpers", "strategy"]
    assert bundle.files["strategy.py"].decode() == built.source
    compile(built.source, "strategy.py", "exec")


def test_the_cell_map_points_each_bundled_line_at_its_cell_and_line() -> None:
    built = bundle_notebook(RUN_ALL)
    lines = built.source.splitlines()
    manifest = load_bundle(built.data).manifest
    assert manifest["cell_lines"] == built.cell_lines
    assert [s["cell_id"] for s in built.cell_lines] == ["imports", "helpers", "strategy"]
    cells = {c["id"]: _source(c).splitlines() for c in RUN_ALL["cells"]}
    ids = [c["id"] for c in RUN_ALL["cells"]]
    checked = 0
    for number, text in enumerate(lines, 1):
        where = locate(built.cell_lines, number)
        if text.startswith("# --- cell"):
            assert where is None
            continue
        if where is None or not text:
            continue
        index, cid, line = where
        assert cid == ids[index] and cells[cid][line - 1] == text
        checked += 1
    assert checked >= 8
    strategy_line = next(i for i, t in enumerate(lines, 1) if t.startswith("def sma"))
    assert locate(built.cell_lines, strategy_line) == (4, "strategy", 2)
    # The traceback reader of the lab (pitwall.tracebacks) reads the same map.
    from pitwall.tracebacks import spans_from_manifest

    spans = spans_from_manifest(manifest, load_bundle(built.data).files)
    assert [(s.number, s.first_line, s.n_lines) for s in spans] == [
        (s["number"], s["first_line"], s["n_lines"]) for s in built.cell_lines]


def _source(c: dict[str, Any]) -> str:
    return str(c["source"])


def test_dependencies_are_followed_by_name_transitively_in_notebook_order() -> None:
    book = nb(cell("import numpy as np\nimport polars as pl\nimport pitwall\n"),
              cell("SCALE = np.sqrt(4)\nNOISE = np.random.rand()\n"),
              cell("def weight(x):\n    return x * SCALE\n"),
              cell("@pitwall.vectorized\ndef s(bars):\n"
                   "    return bars.select('ts', 'symbol', weight=pl.lit(weight(0.5)))\n"),
              cell("SCALE = 1.0  # redefined later: Run All leaves this value\n"))
    built = bundle_notebook(book)
    assert "NOISE" not in built.source
    assert built.source.index("import numpy") < built.source.index("SCALE = np.sqrt")
    assert built.source.index("def weight") < built.source.index("def s(")
    assert built.source.rstrip().endswith("SCALE = 1.0  # redefined later: Run All leaves "
                                          "this value")
    preview = plan_notebook(book)
    assert [c.role for c in preview.cells] == ["dependency"] * 3 + ["strategy", "dependency"]
    assert preview.cells[1].lines == [[1, 1]] and preview.cells[1].names == ["SCALE"]
    assert preview.unresolved == []


def test_a_strategy_subclass_is_the_event_engine() -> None:
    book = nb(cell("import pitwall\n"),
              cell("class Flip(pitwall.Strategy):\n    def on_bar(self, ctx):\n"
                   "        ctx.order_target_percent(ctx.symbols[0], 0.5)\n"),
              cell("print(Flip)\n"))
    built = bundle_notebook(book)
    assert built.kind == "event" and built.plan.strategy == "Flip"
    assert load_bundle(built.data).entrypoint == "strategy.py:Flip"
    assert "print(Flip)" not in built.source
    assert detect_strategy("from pitwall import Strategy\nclass A(Strategy):\n    pass\n") \
        == ("A", "event")
    assert detect_strategy(STRATEGY) == ("s", "vectorized")
    # A subclass of a strategy class is a strategy too: base and subclass are two.
    family = ("import pitwall\nclass Base(pitwall.Strategy):\n    pass\n"
              "class Mine(Base):\n    pass\n")
    with pytest.raises(BundleError, match="several strategies"):
        detect_strategy(family)
    assert detect_strategy(family, "Mine") == ("Mine", "event")
    assert plan_notebook(nb(cell(family)), strategy="Mine").kind == "event"
    # A file holding one of each kind: pitwall run --engine picks by kind.
    both = STRATEGY + "class Ev(pitwall.Strategy):\n    pass\n"
    assert detect_strategy(both, kind="event") == ("Ev", "event")
    assert detect_strategy(both, kind="vectorized") == ("s", "vectorized")


def test_two_strategies_are_refused_before_submission_saying_what_to_do() -> None:
    two = nb(cell(STRATEGY, cid="one"),
             cell("@pitwall.vectorized\ndef t(bars):\n    return bars\n", cid="two"))
    with pytest.raises(NotebookBundleError, match=r"2 strategies \(s in cell 1, t in cell 2\)"
                       ) as info:
        plan_notebook(two)
    message = str(info.value)
    assert "pitwall:strategy" in message and "pitwall:skip" in message
    assert "docs/notebooks.md" in message and info.value.cell is None
    # Each way out the message names works.
    assert plan_notebook(two, strategy="t").strategy == "t"
    tagged = json.loads(json.dumps(two))
    tagged["cells"][1]["metadata"]["tags"] = ["pitwall:strategy"]
    assert plan_notebook(tagged).strategy == "t"
    tagged["cells"][1]["metadata"]["tags"] = ["pitwall:skip"]
    assert plan_notebook(tagged).strategy == "s"
    with pytest.raises(NotebookBundleError, match="no strategy named 'u'"):
        plan_notebook(two, strategy="u")
    with pytest.raises(NotebookBundleError, match="has no strategy"):
        plan_notebook(nb(cell("# prose", kind="markdown"), cell("x = 1")))
    with pytest.raises(BundleError, match="several strategies"):
        detect_strategy(STRATEGY + "\n@pitwall.vectorized\ndef t(bars):\n    return bars\n")


def test_tags_skip_and_params() -> None:
    book = nb(cell('params = {"fast": 5, "slow": 50, "name": "x"}', "pitwall:params"),
              cell("import pitwall\nimport polars as pl\nHELPER = 1\n", "pitwall:skip"),
              cell(STRATEGY))
    built = bundle_notebook(book)
    assert built.params == {"fast": 5, "slow": 50, "name": "x"}
    assert "params =" not in built.source and "HELPER" not in built.source
    assert [c.role for c in built.plan.cells] == ["params", "skipped", "strategy"]


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


def test_magics_shell_escapes_and_invalid_cells() -> None:
    # A magic or shell escape in a cell holding code the strategy needs is refused,
    # naming the cell and the line.
    book = nb(cell("import pitwall\nimport polars as pl\n"),
              cell("def helper():\n    %time x = 1\n    return 1\n"), cell(
                  "@pitwall.vectorized\ndef s(bars):\n    return bars.with_columns(w=helper())\n"))
    with pytest.raises(NotebookBundleError, match=r"cell 2: line 2: magics \(%time\)") as info:
        bundle_notebook(book)
    assert info.value.cell == 2
    shell = nb(cell("!pip install x\n" + STRATEGY))
    with pytest.raises(NotebookBundleError, match=r"cell 1: line 1: shell escapes \(!cmd\) "
                       "cannot run in the sandbox.*pitwall:skip"):
        plan_notebook(shell)
    # Elsewhere, magics, shell escapes, other cell magics and broken scratch cells are
    # left out and shown in the preview.
    ok = nb(cell("%%bash\nls\n"), cell("files = !ls\n"), cell("def broken(:\n"), cell(STRATEGY),
            cell("%%backtest --symbols AAPL --start 2024-01-02 --end 2024-01-31\n"
                 "print('submitted')\n"))
    plan = plan_notebook(ok)
    assert [c.role for c in plan.cells] == ["local", "local", "invalid", "strategy", "unused"]
    assert plan.cells[2].reason.startswith("invalid Python at line 1")
    # A broken cell that may define what the strategy uses is refused with its number.
    needs = nb(cell("import pitwall\nimport polars as pl\n"), cell("K = (\n"), cell(
        "@pitwall.vectorized\ndef s(bars):\n    return bars.with_columns(w=pl.lit(K))\n"))
    with pytest.raises(NotebookBundleError, match=r"cell 2: invalid Python.*uses K"):
        bundle_notebook(needs)


def test_a_backtest_cell_magic_body_is_python() -> None:
    book = nb(cell("import pitwall\nimport polars as pl\n"),
              cell("%%backtest --symbols AAPL --start 2024-01-02 --end 2024-01-31\n"
                   "@pitwall.vectorized\ndef hold(bars):\n"
                   "    return bars.select('ts', 'symbol', weight=pl.lit(1.0))\n", cid="run"))
    built = bundle_notebook(book)
    assert built.plan.strategy == "hold" and "%%backtest" not in built.source
    assert locate(built.cell_lines, built.source.splitlines().index("def hold(bars):") + 1) \
        == (1, "run", 3)


def test_not_notebooks_and_bad_source_maps_are_refused() -> None:
    with pytest.raises(BundleError, match="not JSON"):
        load_notebook(b"import pitwall\n")
    with pytest.raises(BundleError, match="no list of cells"):
        load_notebook(b'{"nbformat": 4}')
    assert load_notebook(json.dumps(RUN_ALL).encode())["cells"][0]["id"] == "title"
    bad = [{"label": "cell 1", "first_line": "<script>", "n_lines": 1, "cell_id": None,
            "number": 1, "file": "strategy.py"}]
    with pytest.raises(BundleError, match="cell_lines"):
        build_bundle({"strategy.py": "x = 1\n"}, entrypoint="strategy.py", cell_lines=bad)
