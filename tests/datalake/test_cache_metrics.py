"""The worker cache's counters on the API's /metrics: after real jobs on an S3 lake (moto),
and when other processes sharing the data dir counted."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from pitwall.bundle import build_bundle
from pitwall_executor.api.metrics import ApiMetrics
from pitwall_executor.config import Config
from pitwall_executor.datalake import Catalog, Snapshot
from pitwall_executor.datalake.cache_metrics import SharedCounters
from pitwall_executor.datalake.group_cache import group_span
from pitwall_executor.datalake.lake_files import push_dataset
from pitwall_executor.jobs.researchers import create_researcher
from pitwall_executor.orchestration.embedded import EmbeddedServer
from pitwall_executor.stack import Stack
from pitwall_executor.storage.s3 import S3ObjectStore

STRATEGY = ("import polars as pl\nimport pitwall\n\n@pitwall.vectorized\n"
            "def s(bars):\n    return bars.select('ts', 'symbol', weight=pl.lit(0.0))\n")


def _samples(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text exposition, parsed by prometheus_client."""
    return {s.name: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if not s.labels}


def _scrape(url: str) -> dict[str, float]:
    res = requests.get(url + "/metrics", timeout=10)
    assert res.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {k: v for k, v in _samples(res.text).items() if k.startswith("pitwall_cache_")}


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
        text = ApiMetrics().render(None, other.lake).decode()
    finally:
        other.store.close()
    split = _samples(text)
    assert (split["pitwall_cache_hits_total"], split["pitwall_cache_evictions_total"]) == (2, 2)
    assert split["pitwall_db_up"] == 0


# A process of its own that shares the data dir's cache, as a `pitwall worker` does: it
# fetches one blob (a miss), reads it again (a hit), then exits normally or is killed.
_COUNTING_PROCESS = """
import os, signal, sys
from pathlib import Path
from pitwall_executor.datalake.cache import FileCache
cache, data, key, end = Path(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3], sys.argv[4]
files = FileCache(cache, 64 << 20)
for _ in range(2):
    files.get(key, len(data), lambda tmp: tmp.write_bytes(data))
if end == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _count_in_another_process(cache: Path, data: bytes, end: str) -> int:
    key = hashlib.sha256(data).hexdigest()
    proc = subprocess.run([sys.executable, "-c", _COUNTING_PROCESS, str(cache), data.hex(),
                           key, end], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == (-signal.SIGKILL if end == "killed" else 0), proc.stderr
    return proc.returncode


def test_the_api_sums_what_other_processes_counted(
        tmp_path: Path, moto_endpoint: str, bucket: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    cfg = Config(data_dir=data_dir, db_url=f"sqlite:///{tmp_path}/pitwall.db",
                 lake_url=f"s3://{bucket}/empty", s3_endpoint_url=moto_endpoint, cache_mb=64)
    stack = Stack.from_config(cfg)
    server = EmbeddedServer(stack, workers=0).start()
    try:
        assert _scrape(server.url)["pitwall_cache_misses_total"] == 0
        blobs = [os.urandom(3000), os.urandom(5000)]
        _count_in_another_process(cfg.cache_dir, blobs[0], "exited")
        _count_in_another_process(cfg.cache_dir, blobs[1], "killed")
        got = _scrape(server.url)
    finally:
        server.stop()
        stack.store.close()
    assert got["pitwall_cache_misses_total"] == 2 and got["pitwall_cache_hits_total"] == 2
    assert got["pitwall_cache_bytes_fetched_total"] == got["pitwall_cache_bytes_saved_total"] \
        == 8000
    assert got["pitwall_cache_hit_ratio"] == 0.5 and got["pitwall_cache_size_bytes"] == 8000
    # The process that exited folded its counts into the archive; the killed one could not,
    # and its own file still counts.
    left = sorted(p.name for p in (cfg.cache_dir / "metrics").glob("*.db"))
    assert len(left) == 2 and left[0].startswith("counter_") and left[1] == "counter_archive.db"


def _add_one_miss(directory: Path) -> None:
    SharedCounters(directory).add({"misses": 1})


def test_a_forked_child_counts_in_a_file_of_its_own(tmp_path: Path) -> None:
    counters = SharedCounters(tmp_path / "metrics")
    counters.add({"misses": 1, "bytes_fetched": 10})  # the parent's file is open at the fork
    child = multiprocessing.get_context("fork").Process(target=_add_one_miss,
                                                         args=(tmp_path / "metrics",))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    counters.add({"misses": 1})
    totals = counters.totals()
    assert (totals["misses"], totals["bytes_fetched"], totals["hits"]) == (3, 10, 0)
    assert len(list((tmp_path / "metrics").glob("counter_*.db"))) == 2
