"""Through the real gVisor sandbox: bad weights fail the job, naming the first bad row.

(NaN is covered in test_run.py.)
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from tests.e2e.cli_kit import SYMBOLS, pitwall, sample_data_dir

ARGS = ["--symbols", ",".join(SYMBOLS), "--start", "2024-03-04", "--end", "2024-03-08"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_data_dir(tmp_path_factory, end=dt.date(2024, 3, 15))


BAD_WEIGHTS = {
    "inf": ("weight=pl.lit(float('inf'))", "row 0: weight is inf for AAPL"),
    "unknown_symbol": ("weight=pl.lit(0.1)).with_columns(symbol=pl.lit('AAPX')",
                       "row 0: symbol 'AAPX' is not in the universe; did you mean 'AAPL'?"),
    "outside_the_run": ("weight=pl.lit(0.1)).with_columns(pl.col('ts') + pl.duration(days=30)",
                        "row 0: 2024-04-03 14:30:00+00:00 is not a bar of AAPL"),
    "duplicate_key": ("weight=pl.lit(0.1)).head(10).vstack(bars.head(1).select("
                      "'ts', 'symbol', weight=pl.lit(0.2))",
                      "row 10: a second weight for AAPL at 2024-03-04 14:30:00+00:00 "
                      "(the first is row 0)"),
    "wrong_length": ("weight=pl.lit(0.1)).vstack(bars.select('ts', 'symbol', "
                     "weight=pl.lit(0.1))", "weight rows but there are only 5850 bars"),
}


@pytest.mark.parametrize("case", sorted(BAD_WEIGHTS))
def test_bad_weights_fail_the_job_naming_the_first_bad_row(data_dir: Path, tmp_path: Path,
                                                           case: str) -> None:
    expr, message = BAD_WEIGHTS[case]
    source = ("import polars as pl\nimport pitwall\n\n@pitwall.vectorized\ndef s(bars):\n"
              f"    return bars.select('ts', 'symbol', {expr})\n")
    path = tmp_path / "strategy.py"
    path.write_text(source)
    res = pitwall(data_dir, "run", str(path), *ARGS, "--json")
    view = json.loads(res.output)
    assert view["status"] == "FAILED" and view["metrics"] is None
    assert str(view["reason"]).startswith("invalid strategy output: ")
    assert message in str(view["reason"]), view["reason"]
