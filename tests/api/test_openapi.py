"""The OpenAPI document matches the handlers: schemathesis against the live server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests
from apikit import Api, StartApi

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,negative_data_rejection")


def test_the_spec_is_served_and_built_from_the_models(api: Api) -> None:
    doc = requests.get(api.url + "/v1/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.1")
    schemas = doc["components"]["schemas"]
    assert {"BacktestSpec", "JobView", "ErrorResponse", "ListBacktestsResponse"} <= set(schemas)
    assert schemas["Limits"]["properties"]["memory_mb"]["maximum"] == 65536
    assert set(doc["paths"]) >= {"/v1/backtests", "/v1/backtests/{id}/cancel", "/healthz"}


@pytest.fixture
def sqlite_api(live_api: StartApi) -> Api:
    # The spec-vs-handler check does not depend on the database: SQLite keeps it under 60 s.
    return live_api()


def test_schemathesis_finds_no_mismatch_against_the_live_server(sqlite_api: Api) -> None:
    api = sqlite_api
    job = api.submit().json()["id"]
    api.complete(job)
    # One worker: with two, Hypothesis builds strategies on two threads and CPython 3.11's
    # ast is not thread-safe ("AST constructor recursion depth mismatch", a flaky Runtime Error).
    res = subprocess.run(
        [str(SCHEMATHESIS), "run", f"{api.url}/v1/openapi.json",
         "--header", f"Authorization: Bearer {api.tokens['alice']}",
         "--checks", CHECKS, "--max-examples", "8", "--workers", "1", "--seed", "7",
         "--phases", "examples,coverage,fuzzing", "--no-color"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
