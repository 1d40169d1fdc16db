"""The whole path over HTTP: the SMA example → POST → worker thread → gVisor → COMPLETED."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
from apikit import ROOT, Api, StartApi, spec_json
from prometheus_client.parser import text_string_to_metric_families

from pitwall.bundle import build_bundle
from pitwall.models import BacktestSpec, JobStatus
from pitwall_executor.datalake.market_calendar import trading_minutes

SMA = ROOT / "examples" / "sma_crossover.py"


@pytest.fixture
def serve(live_api: StartApi) -> Api:
    return live_api(workers=1)


def test_the_sma_example_runs_in_gvisor_through_the_api(serve: Api) -> None:
    bundle = build_bundle({"sma_crossover.py": SMA.read_bytes()}, entrypoint="sma_crossover.py")
    spec = spec_json(universe=["AAPL", "MSFT", "AMZN"], start="2024-03-04", end="2024-03-15",
                     params={"fast": 5, "slow": 60})
    res = serve.submit(spec=spec, bundle=bundle)
    assert res.status_code == 202, res.text
    job = res.json()["id"]
    deadline = time.monotonic() + 120
    while (view := serve.get(f"/v1/backtests/{job}").json())["status"] in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, f"job still {view['status']} after 120 s"
        time.sleep(0.5)
    assert view["status"] == "COMPLETED", view["reason"]
    assert view["progress"] == 1.0

    rows = serve.stack.store.artifacts(job)
    on_disk = json.loads(Path(urlparse(rows["metrics.json"]["uri"]).path).read_text())
    minutes = trading_minutes(dt.date(2024, 3, 4), dt.date(2024, 3, 15))  # the spec's range
    assert view["metrics"]["n_bars"] == minutes and view["metrics"]["sharpe"] != 0
    for key, value in view["metrics"].items():  # the API shows exactly what was written
        assert on_disk[key] == value, key
    # The report is written after the commit: until it is recorded the API says "503, retry
    # after a second" (never 404), as a client waits it out (docs/architecture.md §2).
    deadline = time.monotonic() + 60
    while (report := serve.get(f"/v1/backtests/{job}/report")).status_code == 503:
        assert report.headers["Retry-After"] == "1" and "still being written" in report.text
        assert time.monotonic() < deadline, "the report was never recorded"
        time.sleep(0.2)
    # follows the signed redirect
    assert report.status_code == 200 and "Plotly.newPlot" in report.text
    assert report.url.startswith(serve.url + "/v1/artifacts/") and "sig=" in report.url
    assert serve.get(f"/v1/backtests/{job}/logs").status_code == 200
    metrics = requests.get(serve.url + "/metrics", timeout=10).text
    jobs = {s.labels["status"]: s.value for family in text_string_to_metric_families(metrics)
            if family.name == "pitwall_jobs" for s in family.samples}
    assert jobs["COMPLETED"] == 1 and jobs["PENDING"] == jobs["RUNNING"] == 0


def test_a_report_recorded_between_the_apis_two_reads_is_served_not_404(
        live_api: StartApi) -> None:
    """The handler reads the job's artifacts, then (missing) whether they are still being
    written. A worker that records the report between the two reads must not turn the
    answer into a 404: the rows and their event commit together, so the handler reads
    the rows again. The store's first read is wrapped to record the report right after
    it, which is that interleaving every time."""
    api = live_api()
    store = api.stack.store
    spec = BacktestSpec(dataset="sample", universe=["AAPL"], start=dt.date(2024, 3, 4),
                        end=dt.date(2024, 3, 8))
    job = store.create_job(spec=spec, researcher="alice", bundle=b"zip",
                           bundle_sha256="c" * 64, data_version=1)
    attempt = store.start_attempt(job, "w1")
    assert attempt == 1 and store.finish(job, attempt, JobStatus.COMPLETED)
    row = {"name": "report.html", "uri": "file:///nonexistent/report.html",
           "sha256": "d" * 64, "size": 1}
    real = store.artifacts
    calls = []

    def artifacts_then_record(job_id: str) -> dict[str, dict[str, object]]:
        rows = real(job_id)
        calls.append(sorted(rows))
        if len(calls) == 1:  # the worker records the report just after this read
            assert store.add_artifacts(job, attempt, [row], {"files": ["report.html"]})
        return rows

    store.artifacts = artifacts_then_record  # type: ignore[method-assign]
    try:
        answer = api.get(f"/v1/backtests/{job}/report", allow_redirects=False)
    finally:
        store.artifacts = real  # type: ignore[method-assign]
    assert calls[0] == []  # the first read really missed it
    assert answer.status_code == 302, answer.text
    assert "/v1/artifacts/" in answer.headers["Location"]
