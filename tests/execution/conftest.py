"""Fixtures for event-mode tests: generated bars, job dirs, a real gVisor backend."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import polars as pl
import pytest

from pitwall_executor.datalake.generate import generate_bars
from pitwall_executor.sandbox.gvisor import RUNSC, GVisorBackend


def minute_bars(symbols: list[str], days: int = 2) -> pl.DataFrame:
    start = dt.date(2024, 1, 2)
    frames = generate_bars(symbols, start, start + dt.timedelta(days=days + 2), seed=11)
    bars = pl.concat(list(frames))
    first = sorted(bars.get_column("ts").dt.date().unique().to_list())[:days]
    return bars.filter(pl.col("ts").dt.date().is_in(first))


def make_job(root: Path, source: str, symbols: list[str], *, capital: float = 1e6,
             params: dict[str, object] | None = None) -> Path:
    """A job dir as the worker writes it for event mode: bundle/ and input/spec.json only."""
    job = root / "job"
    (job / "bundle").mkdir(parents=True)
    (job / "input").mkdir()
    (job / "bundle" / "strategy.py").write_text(source)
    (job / "input" / "spec.json").write_text(json.dumps({
        "kind": "event", "entrypoint": "strategy.py", "params": params or {}, "seed": 0,
        "symbols": symbols, "capital": capital}))
    for p in (job, job / "bundle", job / "input"):
        p.chmod(0o755)
    return job


@pytest.fixture(scope="session")
def gvisor(tmp_path_factory: pytest.TempPathFactory) -> GVisorBackend:
    if shutil.which(RUNSC) is None:
        pytest.fail(f"these tests need gVisor: runsc was not found at {RUNSC}; install it "
                    "(apt-get install runsc) — they are never skipped")
    return GVisorBackend(tmp_path_factory.mktemp("gvisor-events"))
