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
                         ("POST", "pitwall/defaults"), ("GET", "pitwall/equity/x")):
        resp = await client.fetch(f"http://localhost:{jp_http_port}{jp_base_url}{path}",
                                  method=method, body=b"{}" if method == "POST" else None,
                                  raise_error=False)
        assert resp.code == 403, (method, path, resp.code)


async def test_defaults_read_the_params_cell(jp_fetch: Any) -> None:
    resp = await post(jp_fetch, "defaults",
                      {"notebook": notebook(SMA, params='params = {"fast": 7, "slow": 70}')})
    body = json.loads(resp.body)
    assert body["params"] == {"fast": 7, "slow": 70} and body["dataset"] == "sample"


async def test_a_refused_bundle_names_the_cell(jp_fetch: Any) -> None:
    resp = await post(jp_fetch, "submit", {"notebook": notebook("x = 1", "%run evil.py", SMA),
                                           "active_cell": 2, "spec": SPEC})
    assert resp.code == 400
    body = json.loads(resp.body)
    assert body["cell"] == 2 and "magic %run" in body["message"]


async def test_submit_runs_in_the_sandbox_and_the_results_come_back(jp_fetch: Any) -> None:
    assert os.environ["PITWALL_API_URL"].startswith("http://127.0.0.1:")
    assert os.environ["PITWALL_TOKEN"] and "PITWALL_DB_URL" not in os.environ
    resp = await post(jp_fetch, "submit", {
        "notebook": notebook(SMA, "raise SystemExit('not bundled: after the active cell')",
                             params='params = {"fast": 5, "slow": 60}'),
        "active_cell": 1, "spec": SPEC})
    assert resp.code == 202, resp.body
    job_id = json.loads(resp.body)["id"]
    for _ in range(240):
        job = json.loads((await jp_fetch("pitwall", "api", "v1", "backtests", job_id)).body)
        if job["status"] not in ("PENDING", "RUNNING"):
            break
        await asyncio.sleep(0.5)
    assert job["status"] == "COMPLETED", job["reason"]
    assert job["spec"]["params"] == {"fast": 5, "slow": 60}
    points = json.loads((await jp_fetch("pitwall", "equity", job_id)).body)
    minutes = trading_minutes(dt.date.fromisoformat(SPEC["start"]),
                              dt.date.fromisoformat(SPEC["end"]))
    assert len(points["ts"]) == len(points["equity"]) == minutes
    report = await jp_fetch("pitwall", "report", job_id)
    assert b"Plotly" in report.body and job_id.encode() in report.body
