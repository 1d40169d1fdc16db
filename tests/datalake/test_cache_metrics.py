"""The worker cache's counters on the API's /metrics, after real jobs on an S3 lake (moto)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import requests

from pitwall.bundle import build_bundle
from pitwall_executor.api.metrics import ApiMetrics
from pitwall_executor.config import Config
from pitwall_executor.datalake import Catalog, Snapshot
from pitwall_executor.datalake.group_cache import group_span
from pitwall_executor.datalake.lake_files import push_dataset
from pitwall_executor.jobs.researchers import create_researcher
from pitwall_executor.orchestration.embedded import EmbeddedServer
from pitwall_executor.stack import Stack
from pitwall_executor.storage.s3 import S3ObjectStore

STRATEGY = ("import polars as pl\nimport pitwall\n\n@pitwall.vectorized\n"
            "def s(bars):\n    return bars.select('ts', 'symbol', weight=pl.lit(0.0))\n")


def _scrape(url: str) -> dict[str, float]:
    text = requests.get(url + "/metrics", timeout=10).text
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith("pitwall_cache_")}


def _run_job(url: str, token: str, symbols: list[str]) -> None:
    spec = json.dumps({"dataset": "sample", "universe": symbols, "start": "2024-03-04",
                       "end": "2024-03-15"})
    bundle = build_bundle({"s.py": STRATEGY}, entrypoint="s.py")
    files: dict[str, tuple[str, bytes | str, str]] = {
        "bundle": ("bundle.zip", bundle, "application/zip"),
        "spec": ("spec.json", spec, "application/json")}
    headers = {"Authorization": f"Bearer {token}"}
    res = requests.post(url + "/v1/backtests", headers=headers, files=files, timeout=10)
    assert res.status_code == 202, res.text
    job = res.json()["id"]
    deadline = time.monotonic() + 180
    while (view := requests.get(f"{url}/v1/backtests/{job}", headers=headers,
                                timeout=10).json())["status"] in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, f"job still {view['status']} after 180 s"
        time.sleep(0.5)
    assert view["status"] == "COMPLETED", view["reason"]


def test_cache_counters_reach_the_api_metrics_after_jobs(
        tmp_path: Path, lake: tuple[Catalog, Snapshot], moto_endpoint: str, bucket: str) -> None:
    catalog, _snapshot = lake
    store = S3ObjectStore.from_url(f"s3://{bucket}/lake", endpoint_url=moto_endpoint)
    try:
        push_dataset(catalog, "sample", store)
    finally:
        store.close()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    cfg = Config(data_dir=data_dir, db_url=f"sqlite:///{tmp_path}/pitwall.db",
                 lake_url=f"s3://{bucket}/lake", s3_endpoint_url=moto_endpoint, cache_mb=64,
                 max_bundle_mb=1)
    stack = Stack.from_config(cfg)
    token = create_researcher(stack.store, "alice")
    server = EmbeddedServer(stack, workers=1).start()
    try:
        before = _scrape(server.url)
        assert before["pitwall_cache_misses_total"] == 0  # exported from the start
        symbols = sorted(_snapshot.symbols)[:2]
        # Cold: the two symbols' row groups of the March file are fetched (not the file).
        _run_job(server.url, token, symbols)
        _run_job(server.url, token, symbols)  # warm: served from the cache
        assert stack.lake is not None and stack.lake.cache is not None
        assert stack.lake.cache.evict_all() >= 1
        got = _scrape(server.url)
    finally:
        server.stop()
        stack.store.close()
    march = next(f for f in _snapshot.files if f.min_ts.month == 3)
    assert march.index is not None
    groups = march.row_groups_for(set(symbols))
    need = sum(group_span(march.index, g)[1] - group_span(march.index, g)[0] for g in groups)
    assert len(groups) == 2 and need < march.size / 5
    assert got["pitwall_cache_misses_total"] == 2
    assert got["pitwall_cache_hits_total"] == 2
    assert got["pitwall_cache_bytes_saved_total"] == need
    assert got["pitwall_cache_bytes_fetched_total"] == need
    assert got["pitwall_cache_hit_ratio"] == 0.5
    assert got["pitwall_cache_evictions_total"] == 2
    assert got["pitwall_cache_files"] == 0
    # Split mode: an API process of its own (same data dir) reads the same shared counters.
    other = Stack.from_config(cfg)
    try:
        text = ApiMetrics().render(None, other.lake)
    finally:
        other.store.close()
    assert "pitwall_cache_hits_total 2\n" in text and "pitwall_cache_evictions_total 2\n" in text
