"""The server extension's handlers in a real Jupyter server (pytest-jupyter's jp_fetch),
with the embedded stack and the real gVisor sandbox behind them."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import tornado.httpclient
from tests.jupyter.jpkit import notebook

from pitwall_executor.datalake.market_calendar import trading_minutes

ROOT = Path(__file__).resolve().parents[2]

pytest_plugins = ["pytest_jupyter.jupyter_server"]


SMA = (ROOT / "examples" / "sma_crossover.py").read_text()
SPEC = {"dataset": "sample", "universe": ["AAPL", "MSFT"], "start": "2024-03-04",
        "end": "2024-03-08"}


async def post(jp_fetch: Any, path: str, body: dict[str, Any]) -> Any:
    return await jp_fetch("pitwall", path, method="POST", body=json.dumps(body),
                          raise_error=False)


async def test_unauthenticated_requests_are_refused(jp_fetch: Any, jp_base_url: str,
                                                    jp_http_port: int) -> None:
    await jp_fetch("api", "status")  # the server is up, with the token
    client = tornado.httpclient.AsyncHTTPClient()
    for method, path in (("GET", "pitwall/api/v1/backtests"), ("POST", "pitwall/submit"),
                         ("POST", "pitwall/defaults"), ("GET", "pitwall/equity/x"),
                         ("GET", "pitwall/log/x")):
        resp = await client.fetch(f"http://localhost:{jp_http_port}{jp_base_url}{path}",
                                  method=method, body=b"{}" if method == "POST" else None,
                                  raise_error=False)
        assert resp.code == 403, (method, path, resp.code)
    # The report and the artifacts are pages: a browser without a session goes to login.
    for path in ("pitwall/report/x", "pitwall/artifacts/x/metrics.json"):
        resp = await client.fetch(f"http://localhost:{jp_http_port}{jp_base_url}{path}",
                                  follow_redirects=False, raise_error=False)
        assert resp.code in (302, 403) and "login" in resp.headers.get("Location", "login"), \
            (path, resp.code)


async def test_defaults_read_the_params_cell(jp_fetch: Any) -> None:
    resp = await post(jp_fetch, "defaults",
                      {"notebook": notebook(SMA, params='params = {"fast": 7, "slow": 70}')})
    body = json.loads(resp.body)
    assert body["params"] == {"fast": 7, "slow": 70} and body["dataset"] == "sample"


async def test_a_refused_bundle_names_the_cell(jp_fetch: Any) -> None:
    # A shell escape inside the code the strategy needs (the bundler's rule: it is refused
    # before anything runs, naming the cell).
    escaping = SMA.replace("    if not 0 < fast", "    !ls\n    if not 0 < fast")
    resp = await post(jp_fetch, "submit", {"notebook": notebook("x = 1", escaping),
                                           "spec": SPEC})
    assert resp.code == 400
    body = json.loads(resp.body)
    assert body["cell"] == 2 and "shell escape" in body["message"]


RAISING = """import warnings

import pitwall


@pitwall.vectorized
def boom(bars):
    warnings.warn("unrelated noise")
    window = 0
    raise ValueError(f"window must be > 0, got {window}")
"""


async def finished(jp_fetch: Any, job_id: str) -> dict[str, Any]:
    for _ in range(600):  # a loaded machine: the audit's re-runs share its cores
        job: dict[str, Any] = json.loads(
            (await jp_fetch("pitwall", "api", "v1", "backtests", job_id)).body)
        if job["status"] not in ("PENDING", "RUNNING"):
            return job
        await asyncio.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {job}")


async def test_submit_runs_in_the_sandbox_and_the_results_come_back(jp_fetch: Any) -> None:
    """One completed run (results, report, artifacts) and one raising run (its log, the
    traceback named by notebook cell), in one server: two sandbox runs in all."""
    assert os.environ["PITWALL_API_URL"].startswith("http://127.0.0.1:")
    assert os.environ["PITWALL_TOKEN"] and "PITWALL_DB_URL" not in os.environ
    assert os.environ["JUPYTER_PITWALL_BASE_URL"].endswith("/")
    resp = await post(jp_fetch, "submit", {
        "notebook": notebook(SMA, "raise SystemExit('not bundled: after the active cell')",
                             params='params = {"fast": 5, "slow": 60}'),
        "active_cell": 1, "spec": {**SPEC, "audit": False}})  # the audit is tested elsewhere
    assert resp.code == 202, resp.body
    job_id = json.loads(resp.body)["id"]
    # The raising strategy: an unrelated warning first (noise), then the error in cell 3.
    resp = await post(jp_fetch, "submit", {
        "notebook": notebook("x = 1", "# notes\n", RAISING),
        "spec": {**SPEC, "audit": False}, "path": "work/raising.ipynb"})
    assert resp.code == 202, resp.body
    failed_id = json.loads(resp.body)["id"]
    job = await finished(jp_fetch, job_id)
    assert job["status"] == "COMPLETED", job["reason"]
    assert job["spec"]["params"] == {"fast": 5, "slow": 60}
    # The dialog's spec names no preset, and the extension forwards it as unnamed: the
    # deployment's default preset is applied and stored (docs/engine-conventions.md §2.3).
    assert (job["spec"]["costs_preset"], job["spec"]["default_costs_preset"]) == ("retail",
                                                                                  "retail")
    assert job["spec"]["costs"]["spread_bps"] > 0 and job["spec"]["execution"]["lot_size"] == 1
    points = json.loads((await jp_fetch("pitwall", "equity", job_id)).body)
    minutes = trading_minutes(dt.date.fromisoformat(SPEC["start"]),
                              dt.date.fromisoformat(SPEC["end"]))
    assert len(points["ts"]) == len(points["equity"]) == minutes
    # The report is served as a page whose own scripts run, sandboxed, fetching nothing.
    for _ in range(240):  # the report is written just after the job completes
        report = await jp_fetch("pitwall", "report", job_id, raise_error=False)
        if report.code != 503:
            break
        assert b'http-equiv="refresh"' in report.body  # the page looks again by itself
        await asyncio.sleep(0.5)
    assert report.code == 200, report.body[:500]
    assert b"Plotly" in report.body and job_id.encode() in report.body
    assert report.headers["Content-Type"].startswith("text/html")
    csp = report.headers["Content-Security-Policy"]
    assert "script-src 'unsafe-inline'" in csp and "sandbox allow-scripts" in csp
    assert "default-src 'none'" in csp and "connect-src" not in csp
    metrics = await jp_fetch("pitwall", "artifacts", job_id, "metrics.json", raise_error=False)
    assert metrics.code == 200, metrics.body[:500]
    assert metrics.headers["Content-Type"] == "application/json"
    assert json.loads(metrics.body)["sharpe"] == job["metrics"]["sharpe"]
    equity = await jp_fetch("pitwall", "artifacts", job_id, "equity.parquet")
    assert equity.headers["Content-Disposition"].startswith("attachment")
    assert equity.body[:4] == b"PAR1"
    missing = await jp_fetch("pitwall", "artifacts", job_id, "nope.txt", raise_error=False)
    assert missing.code == 404 and b"nope.txt" in missing.body
    # The list says which notebook a job came from, when this lab submitted it.
    listed = json.loads((await jp_fetch("pitwall", "api", "v1", "backtests")).body)["items"]
    assert {j["id"]: j["notebook"] for j in listed}[failed_id] == "work/raising.ipynb"

    failed = await finished(jp_fetch, failed_id)
    assert failed["status"] == "FAILED", failed
    body = json.loads((await jp_fetch("pitwall", "log", failed_id)).body)
    assert body["mapped"] and body["notebook"] == "work/raising.ipynb"
    assert "unrelated noise" in body["log"]  # the full log keeps everything
    failure = body["failure"]
    assert failure["cell"] == "cell 3" and failure["cell_id"] == "c2"
    assert failure["error"] == "ValueError: window must be > 0, got 0"
    assert failure["noise_lines"] >= 1 and "unrelated noise" not in failure["traceback"]
    # RAISING's line 10 is line 10 of cell 3, wherever cell 3 sits in strategy.py.
    assert "Cell 3, line 10, in boom" in failure["traceback"], failure["traceback"]
    assert "Pitwall frame" in failure["traceback"] and "runner.py" not in failure["traceback"]
