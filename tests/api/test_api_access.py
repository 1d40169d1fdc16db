"""Identity and access: who may read, list, cancel and fetch reports of which jobs.

Another researcher's job answers 404 (as if it did not exist), so job ids cannot be
probed; an admin sees and cancels everything.
"""

from __future__ import annotations

import time

import requests
from apikit import Api
from prometheus_client.parser import text_string_to_metric_families

from pitwall_executor.jobs.researchers import authenticate, token_digest


def _job(api: Api, who: str = "alice") -> str:
    res = api.submit(who)
    assert res.status_code == 202, res.text
    assert res.headers["Location"] == f"/v1/backtests/{res.json()['id']}"
    return str(res.json()["id"])


def test_tokens_are_stored_hashed_and_unauthenticated_calls_get_401(api: Api) -> None:
    token = api.tokens["alice"]
    with api.stack.store.engine.connect() as conn:
        stored = [r[0] for r in conn.exec_driver_sql("SELECT token_sha256 FROM researchers")]
    assert token not in stored and token_digest(token) in stored
    who = authenticate(api.stack.store, token)
    assert who is not None and who.name == "alice" and not who.is_admin
    for method, path in [("GET", "/v1/backtests"), ("POST", "/v1/backtests"),
                         ("GET", "/v1/backtests/00000000-0000-0000-0000-000000000000")]:
        res = requests.request(method, api.url + path, timeout=10)
        assert res.status_code == 401, res.text
        assert "Bearer" in res.json()["message"] and res.headers["WWW-Authenticate"]
        bad = requests.request(method, api.url + path, timeout=10,
                               headers={"Authorization": "Bearer pw_not-a-token"})
        assert bad.status_code == 401 and "not valid" in bad.json()["message"]


def test_a_researcher_cannot_read_cancel_or_fetch_anothers_job(api: Api) -> None:
    job = _job(api, "bob")
    api.complete(job)
    for path in (f"/v1/backtests/{job}", f"/v1/backtests/{job}/report",
                 f"/v1/backtests/{job}/logs"):
        res = api.get(path, "alice", allow_redirects=False)
        assert res.status_code == 404, (path, res.text)
        assert res.json()["error"] == "not_found"
        assert api.get(path, "bob", allow_redirects=False).status_code in (200, 302)
    pending = _job(api, "bob")
    res = api.post(f"/v1/backtests/{pending}/cancel", "alice")
    assert res.status_code == 404
    assert api.get(f"/v1/backtests/{pending}", "bob").json()["status"] == "PENDING"
    listed = api.get("/v1/backtests", "alice").json()["items"]
    assert listed == []
    forbidden = api.get("/v1/backtests", "alice", params={"researcher": "bob"})
    assert forbidden.status_code == 403 and "admin" in forbidden.json()["message"]


def test_an_admin_sees_and_cancels_every_job(api: Api) -> None:
    a, b = _job(api, "alice"), _job(api, "bob")
    ids = {j["id"] for j in api.get("/v1/backtests", "root").json()["items"]}
    assert ids == {a, b}
    only_bob = api.get("/v1/backtests", "root", params={"researcher": "bob"}).json()["items"]
    assert [j["id"] for j in only_bob] == [b]
    assert api.get(f"/v1/backtests/{a}", "root").json()["researcher"] == "alice"
    res = api.post(f"/v1/backtests/{b}/cancel", "root")
    assert res.status_code == 202 and res.json()["status"] == "CANCELLED"


def test_cancel_a_finished_job_is_a_conflict(api: Api) -> None:
    job = _job(api)
    api.complete(job)
    res = api.post(f"/v1/backtests/{job}/cancel")
    assert res.status_code == 409
    assert "already ended as COMPLETED" in res.json()["message"]
    again = _job(api)
    assert api.post(f"/v1/backtests/{again}/cancel").status_code == 202
    assert api.post(f"/v1/backtests/{again}/cancel").status_code == 409


def test_list_filters_and_pages_with_a_cursor(api: Api) -> None:
    ids = [_job(api) for _ in range(5)]
    api.complete(ids[0])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = api.get("/v1/backtests", params=params).json()
        assert len(page["items"]) <= 2
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    done = api.get("/v1/backtests", params={"status": "COMPLETED"}).json()["items"]
    assert [j["id"] for j in done] == [ids[0]] and done[0]["metrics"]["n_bars"] == 1950
    future = api.get("/v1/backtests", params={"since": "2999-01-01T00:00:00Z"}).json()
    assert future["items"] == []
    past = api.get("/v1/backtests", params={"until": "2000-01-01"}).json()
    assert past["items"] == []
    for params, field in [({"limit": "0"}, "limit"), ({"limit": "100000"}, "limit"),
                          ({"status": "DONE"}, "status"), ({"since": "yesterday"}, "since"),
                          ({"cursor": "!!"}, "cursor")]:
        res = api.get("/v1/backtests", params=params)
        assert res.status_code == 400, (params, res.text)
        assert res.json()["fields"][0]["field"] == field


def test_the_report_redirects_to_a_signed_url_that_expires(api: Api) -> None:
    job = _job(api)
    api.complete(job)
    res = api.get(f"/v1/backtests/{job}/report", allow_redirects=False)
    assert res.status_code == 302
    link = api.url + res.headers["Location"]
    page = requests.get(link, timeout=10)  # no bearer token: the signature is the credential
    assert page.status_code == 200 and f"report of {job}" in page.text
    assert page.headers["Content-Type"].startswith("text/html")
    tampered = requests.get(link.replace("report.html", "log.txt"), timeout=10)
    assert tampered.status_code == 403 and "signature" in tampered.json()["message"]
    time.sleep(3.1)  # the fixture's links live 2 s
    expired = requests.get(link, timeout=10)
    assert expired.status_code == 403 and "expired" in expired.json()["message"]
    logs = api.get(f"/v1/backtests/{job}/logs")
    assert logs.status_code == 200 and logs.text == "hello from the strategy\n"
    fresh = _job(api)
    none = api.get(f"/v1/backtests/{fresh}/report", allow_redirects=False)
    assert none.status_code == 404 and "PENDING" in none.json()["message"]


def test_health_metrics_and_unknown_paths(api: Api) -> None:
    # an API without worker threads has no loops to report
    assert requests.get(api.url + "/healthz", timeout=10).json() == {
        "status": "ok", "database": "ok", "loops": {}}
    _job(api)
    api.get("/v1/backtests")
    text = requests.get(api.url + "/metrics", timeout=10).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("pitwall_jobs", (("status", "PENDING"),))] == 1
    assert samples[("pitwall_db_up", ())] == 1
    assert samples[("pitwall_http_requests_total", (("method", "POST"), ("route", "/v1/backtests"),
                                                    ("status", "202")))] == 1
    assert samples[("pitwall_http_request_duration_seconds_bucket", (
        ("le", "+Inf"), ("method", "GET"), ("route", "/v1/backtests")))] == 1
    missing = requests.get(api.url + "/v1/nothing", timeout=10)
    assert missing.status_code == 404 and "openapi" in missing.json()["message"]
    bogus = api.get("/v1/backtests/not-a-job-id")
    assert bogus.status_code == 404
