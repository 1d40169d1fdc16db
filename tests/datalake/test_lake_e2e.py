"""A backtest whose lake is in S3 (moto on loopback): pushed with ``pitwall data push``, run
COMPLETED through the real gVisor sandbox, and a rerun served from the worker cache."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tests.storage.s3_testserver import FaultProxy

from pitwall_executor.cli import main
from pitwall_executor.datalake.cache import FileCache
from pitwall_executor.datalake.catalog import Catalog, generate_dataset

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).resolve().parents[2]
SMA = ROOT / "examples" / "sma_crossover.py"
SYMBOLS = ["AAPL", "MSFT", "AMZN"]


def pitwall(data_dir: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args], catch_exceptions=False)


def run(data_dir: Path) -> dict[str, Any]:
    res = pitwall(data_dir, "run", str(SMA), "--symbols", ",".join(SYMBOLS), "--start",
                  "2024-03-04", "--end", "2024-04-12", "--param", "fast=5", "--param",
                  "slow=60", "--json")
    view: dict[str, Any] = json.loads(res.output)
    return view


def test_a_backtest_on_an_s3_lake_completes_and_reruns_from_the_cache(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
        bucket: str, proxy_url: str, proxy: FaultProxy) -> None:
    data_dir = tmp_path_factory.mktemp("pitwall")
    data_dir.chmod(0o755)
    local = data_dir / "local-lake"
    snap = generate_dataset(Catalog(local), "sample", symbols=SYMBOLS, start=dt.date(2024, 3, 1),
                            end=dt.date(2024, 4, 30), seed=11)
    res = pitwall(data_dir, "data", "push", "sample", "--to", f"s3://{bucket}/lake", "--from",
                  str(local), "--endpoint-url", proxy_url)
    assert res.exit_code == 0, res.output
    assert f"{len(snap.files) + 1} files uploaded" in res.output  # data files + the version
    again = pitwall(data_dir, "data", "push", "sample", "--to", f"s3://{bucket}/lake",
                    "--from", str(local), "--endpoint-url", proxy_url)
    assert "0 files uploaded" in again.output

    monkeypatch.setenv("PITWALL_LAKE_URL", f"s3://{bucket}/lake")
    monkeypatch.setenv("PITWALL_S3_ENDPOINT_URL", proxy_url)
    proxy.reset()
    first = run(data_dir)
    assert first["status"] == "COMPLETED", first["reason"]
    fetched = proxy.gets("/lake/sample/data/")
    assert len(fetched) == 2  # March and April, one GET each
    cache = FileCache(data_dir / "cache", 1 << 30)
    assert (cache.metrics()["misses"], cache.metrics()["hits"]) == (2, 0)

    second = run(data_dir)
    assert second["status"] == "COMPLETED", second["reason"]
    assert second["metrics"] == first["metrics"]
    assert len(proxy.gets("/lake/sample/data/")) == 2  # nothing downloaded again
    metrics = cache.metrics()
    assert (metrics["misses"], metrics["hits"], metrics["hit_ratio"]) == (2, 2, 0.5)
    assert metrics["bytes_saved"] == sum(f.size for f in snap.files if f.min_ts.month in (3, 4))
    for path in (data_dir / "cache" / "data").iterdir():
        assert path.stat().st_mode & 0o777 == 0o444
