"""What the end-to-end CLI tests share: a small sample dataset and the `pitwall` CLI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pitwall_executor.cli import main
from pitwall_executor.datalake.catalog import Catalog, generate_dataset

SYMBOLS = ["AAPL", "MSFT", "AMZN"]


def sample_data_dir(factory: pytest.TempPathFactory, *, end: dt.date) -> Path:
    """A data dir the sandbox's uid can read, holding `sample` from 2024-03-01 to ``end``."""
    root = factory.mktemp("pitwall")
    root.chmod(0o755)
    generate_dataset(Catalog(root / "lake"), "sample", symbols=SYMBOLS,
                     start=dt.date(2024, 3, 1), end=end, seed=11)
    return root


def pitwall(data_dir: Path, *args: str) -> Result:
    """Run the `pitwall` CLI in-process on ``data_dir``."""
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args],
                              catch_exceptions=False)
