"""``pitwall run --grid``: a sweep through gVisor in embedded mode, and its results table."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner

from pitwall_executor.cli import main
from pitwall_executor.cli.sweep import parse_grid
from pitwall_executor.datalake.catalog import Catalog, generate_dataset

ROOT = Path(__file__).resolve().parents[2]
SMA = ROOT / "examples" / "sma_crossover.py"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)
    generate_dataset(Catalog(tmp_path / "lake"), "sample", symbols=["AAPL", "MSFT"],
                     start=dt.date(2024, 3, 4), end=dt.date(2024, 3, 8), seed=11)
    return tmp_path


def test_grid_values_parse_as_json_else_strings() -> None:
    assert parse_grid(("fast=5,10", "mode=a, b", "on=true")) == {
        "fast": [5, 10], "mode": ["a", "b"], "on": [True]}


def test_a_2x2_grid_runs_every_point_and_prints_the_table(data_dir: Path) -> None:
    res = CliRunner().invoke(main, [
        "--data-dir", str(data_dir), "run", str(SMA), "--symbols", "AAPL,MSFT",
        "--start", "2024-03-04", "--end", "2024-03-08",
        "--grid", "fast=5,10", "--grid", "slow=60,120"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("sweep ") and lines[0].endswith(": COMPLETED"), res.output
    assert lines[1].split()[:4] == ["fast", "slow", "status", "sharpe"]
    points = [line.split()[:3] for line in lines[2:6]]
    assert points == [["5", "60", "COMPLETED"], ["5", "120", "COMPLETED"],
                      ["10", "60", "COMPLETED"], ["10", "120", "COMPLETED"]], res.output
    # No preset named: every run got the deployment's default, and the summary says so.
    assert lines[6] == "costs preset: retail (the deployment's default)", res.output


def test_a_bad_grid_is_refused_before_anything_runs(data_dir: Path) -> None:
    res = CliRunner().invoke(main, [
        "--data-dir", str(data_dir), "run", str(SMA), "--symbols", "AAPL",
        "--start", "2024-03-04", "--end", "2024-03-08", "--grid", "fast"])
    assert res.exit_code == 2 and "name=v1,v2" in res.output, res.output
