from __future__ import annotations

import datetime as dt

import pytest

from pitwall.models import EngineKind
from pitwall.notebook.magic import dependency_source, parse_spec


def test_parse_spec_reads_the_line_and_params_as_json() -> None:
    spec = parse_spec("--symbols AAPL,MSFT --start 2024-01-02 --end 2024-03-28 --param fast=5 "
                      "--param name=abc --engine vectorized --dataset sample --version 2")
    assert spec.universe == ["AAPL", "MSFT"] and spec.start == dt.date(2024, 1, 2)
    assert spec.params == {"fast": 5, "name": "abc"} and spec.version == 2
    assert spec.engine is EngineKind.VECTORIZED


def test_without_engine_the_cells_strategy_decides_it() -> None:
    line = "--symbols AAPL --start 2024-01-02 --end 2024-03-28"
    event_cell = "import pitwall\n\nclass Dip(pitwall.Strategy):\n    def on_bar(self, bar):\n" \
        "        pass\n"
    vector_cell = "import pitwall\n\n@pitwall.vectorized\ndef f(bars):\n    return bars\n"
    assert parse_spec(line, event_cell).engine is EngineKind.EVENT
    assert parse_spec(line, vector_cell).engine is EngineKind.VECTORIZED
    # an explicit --engine still wins (the server refuses a mismatch with what to do)
    assert parse_spec(line + " --engine vectorized", event_cell).engine is EngineKind.VECTORIZED


@pytest.mark.parametrize("line, message", [
    ("--start 2024-01-02 --end 2024-01-05", "symbols"),
    ("--symbols A --start 2024-13-02 --end 2024-01-05", "usage"),
    ("--symbols A --start 2024-01-02 --end 2024-01-05 --param 1x=2", "name=value"),
])
def test_bad_lines_say_how_to_write_them(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_spec(line)


def test_dependencies_are_the_latest_definitions_used_transitively() -> None:
    history = [
        "import polars as pl\nimport numpy as np\n%matplotlib inline",
        "WINDOW = 5\nUNUSED = 1",
        "def helper(x):\n    return x.rolling_mean(WINDOW)",
        "WINDOW = 10",
        "bars.plot()",
        "!ls",
    ]
    cell = "def strat(bars):\n    return bars.with_columns(ma=helper(pl.col('close')))\n"
    src = dependency_source(cell, history)
    assert "import polars as pl" in src and "numpy" not in src
    assert "WINDOW = 10" in src and "WINDOW = 5" not in src and "UNUSED" not in src
    assert src.index("def helper") < src.index("def strat") and "plot" not in src
    compile(src, "strategy.py", "exec")
