"""The server extension's handlers in a real Jupyter server (pytest-jupyter's jp_fetch),
with the embedded stack and the real gVisor sandbox behind them."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest
import tornado.httpclient

from pitwall_executor.datalake.catalog import Catalog, generate_dataset

ROOT = Path(__file__).resolve().parents[2]
pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pitwall-jp")
    root.chmod(0o755)
    generate_dataset(Catalog(root / "lake"), "sample", symbols=["AAPL", "MSFT"],
                     start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 15), seed=5)
    return root


@pytest.fixture
def jp_server_config(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("PITWALL_DATA_DIR", str(data_dir))
    monkeypatch.setenv("PITWALL_DB_URL", f"sqlite:///{data_dir}/pitwall.db")
    monkeypatch.delenv("PITWALL_API_URL", raising=False)
    monkeypatch.delenv("PITWALL_TOKEN", raising=False)
    return {"ServerApp": {"jpserver_extensions": {"pitwall_server": True}}}


def notebook(*sources: str, params: str | None = None) -> dict[str, Any]:
    cells = [{"cell_type": "code", "source": s, "metadata": {}, "outputs": [],
              "execution_count": None, "id": f"c{i}"} for i, s in enumerate(sources)]
    if params is not None:
        cells.insert(0, {"cell_type": "code", "source": params, "outputs": [],
                         "metadata": {"tags": ["pitwall:params"]}, "execution_count": None,
                         "id": "params"})
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


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
    assert len(points["ts"]) == len(points["equity"]) == 5 * 390
    report = await jp_fetch("pitwall", "report", job_id)
    assert b"Plotly" in report.body and job_id.encode() in report.body
