"""A benchmark outside the universe (an index series imported as a symbol of the dataset):
the trusted engine reads its bars for beta, alpha and the tear sheet, the strategy never
sees them, the manifest pins its files, and an unknown one is refused at submission.
Through a real worker and the gVisor sandbox."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from pitwall.bundle import build_bundle
from pitwall.errors import UnknownSymbolError
from pitwall.models import BacktestSpec, JobStatus, Limits
from pitwall_executor.config import load_config
from pitwall_executor.datalake import Catalog, generate_dataset
from pitwall_executor.orchestration.worker import Worker
from pitwall_executor.stack import Stack

pytestmark = pytest.mark.sandbox

#: Fails the run if any bar of a symbol outside its universe reaches it.
ONLY_ITS_UNIVERSE = """
import polars as pl
import pitwall

@pitwall.vectorized
def half(bars):
    seen = set(bars.get_column("symbol").unique().to_list())
    if seen != {"AAPL", "MSFT"}:
        raise RuntimeError(f"the strategy saw {sorted(seen)}")
    return bars.select("ts", "symbol", weight=pl.lit(0.5))
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    root = tmp_path_factory.mktemp("benchmark-job")
    root.chmod(0o755)
    generate_dataset(Catalog(root / "lake"), "sample", symbols=["AAPL", "MSFT", "SPX"],
                     start=dt.date(2024, 3, 4), end=dt.date(2024, 3, 15), seed=7)
    return Stack.from_config(load_config(environ={}, data_dir=root, sandbox="gvisor"))


def spec(benchmark: str) -> BacktestSpec:
    return BacktestSpec(dataset="sample", universe=["AAPL", "MSFT"], start=dt.date(2024, 3, 4),
                        end=dt.date(2024, 3, 15), benchmark=benchmark, audit=False,
                        limits=Limits(timeout_s=120, memory_mb=512))


def test_a_benchmark_outside_the_universe_is_read_by_the_engine_only(stack: Stack) -> None:
    bundle = build_bundle({"strategy.py": ONLY_ITS_UNIVERSE}, entrypoint="strategy.py")
    job_id = stack.submit(spec("SPX"), bundle, researcher="t")
    assert Worker(stack).run_one(timeout=5) == job_id
    view = stack.store.get(job_id)
    assert view.status is JobStatus.COMPLETED and view.metrics is not None, view.reason
    assert view.metrics.beta is not None and view.metrics.alpha is not None
    rows = stack.store.artifacts(job_id)

    def artifact(name: str) -> dict[str, object]:
        loaded: dict[str, object] = json.loads(
            Path(rows[name]["uri"].removeprefix("file://")).read_text())
        return loaded

    sheet = artifact("tearsheet.json")
    assert sheet["header"]["benchmark"] == "SPX"  # type: ignore[index]
    assert sheet["relative"]["benchmark"] == "SPX"  # type: ignore[index]
    data = artifact("manifest.json")["data"]
    assert isinstance(data, dict) and data["benchmark_files"], data
    assert all(len(f["sha256"]) == 64 for f in data["benchmark_files"])


def test_an_unknown_benchmark_is_refused_before_anything_runs(stack: Stack) -> None:
    bundle = build_bundle({"strategy.py": ONLY_ITS_UNIVERSE}, entrypoint="strategy.py")
    with pytest.raises(UnknownSymbolError, match="SPXX"):
        stack.submit(spec("SPXX"), bundle, researcher="t")
