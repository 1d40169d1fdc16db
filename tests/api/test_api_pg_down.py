"""PostgreSQL goes away for 10 s: the API answers 503 meanwhile and recovers by itself.

The test runs its OWN PostgreSQL (initdb + pg_ctl in a temp dir, on a free port), never
the shared server.
"""

from __future__ import annotations

import time

import pytest
import requests
from apikit import Api, StartApi
from tests.pgkit import OwnPostgres


@pytest.fixture
def api_on_own_pg(own_pg: OwnPostgres, live_api: StartApi) -> Api:
    # own_pg first: set up before the API, so torn down after it.
    return live_api(own_pg.url)


def test_the_api_answers_503_while_postgres_is_down_and_recovers(
        api_on_own_pg: Api, own_pg: OwnPostgres) -> None:
    api = api_on_own_pg
    job = api.submit().json()["id"]
    assert api.get(f"/v1/backtests/{job}").status_code == 200

    own_pg.stop()
    down_until = time.monotonic() + 10.0
    answers: list[int] = []
    while time.monotonic() < down_until:
        t0 = time.monotonic()
        res = api.get(f"/v1/backtests/{job}")
        assert time.monotonic() - t0 < 5.0, "a status read hung while the database was down"
        answers.append(res.status_code)
        if res.status_code == 503:
            body = res.json()
            assert body["error"] == "database_unavailable" and "Retry" in body["message"]
        time.sleep(0.2)
    assert set(answers) == {503}, answers
    assert api.submit().status_code == 503
    assert requests.get(api.url + "/healthz", timeout=10).status_code == 503

    own_pg.start()  # the API process is not restarted
    deadline = time.monotonic() + 15.0
    while (res := api.get(f"/v1/backtests/{job}")).status_code != 200:
        assert time.monotonic() < deadline, f"the API did not recover: {res.status_code}"
        time.sleep(0.2)
    assert res.json()["status"] == "PENDING"
    again = api.submit()
    assert again.status_code == 202
    ids = {j["id"] for j in api.get("/v1/backtests").json()["items"]}
    assert ids == {job, again.json()["id"]}
