"""``pitwall.Client`` rides out an API that answers 503 for a while, and says when it gives up.

PostgreSQL outages are real: the API runs on its own throw-away cluster (as in
test_api_pg_down.py), which the tests stop and start under it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from apikit import Api, StartApi
from test_api_pg_down import OwnPostgres

from pitwall.models import JobStatus, ProgressEvent
from pitwall.notebook.client import ApiError, ApiUnavailableError, Client

OUTAGE_S = 4.0


@pytest.fixture
def api(own_pg: OwnPostgres, live_api: StartApi) -> Api:
    # own_pg first: set up before the API, so torn down after it.
    return live_api(own_pg.url, events_poll_s=0.05)


@pytest.fixture
def client(api: Api) -> Iterator[Client]:
    with Client(api.url, token=api.tokens["alice"]) as c:
        yield c


class Background:
    """``fn()`` on a thread of its own; ``result()`` joins it and re-raises its error."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.value = fn()
        except BaseException as exc:  # handed to the test thread by result()
            self.error = exc

    def result(self, timeout: float) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"still running after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.value


def _outage(api: Api, pg: OwnPostgres, job_id: str, *, during: Background) -> None:
    """Stop PostgreSQL for OUTAGE_S while ``during`` runs; check the API said 503 meanwhile."""
    pg.stop()
    res = api.get(f"/v1/backtests/{job_id}")
    assert res.status_code == 503 and res.json()["error"] == "database_unavailable", res.text
    assert res.headers["Retry-After"] == "2"
    time.sleep(OUTAGE_S)
    assert during.thread.is_alive() and during.error is None, during.error
    pg.start()
    deadline = time.monotonic() + 15.0
    while api.get(f"/v1/backtests/{job_id}").status_code != 200:
        assert time.monotonic() < deadline, "the API did not recover"
        time.sleep(0.2)


def test_wait_rides_out_a_database_outage(api: Api, own_pg: OwnPostgres, client: Client) -> None:
    job_id = api.submit().json()["id"]
    waiting = Background(lambda: client.wait(job_id, poll=0.2, retry_for=60))
    time.sleep(0.5)
    _outage(api, own_pg, job_id, during=waiting)
    api.complete(job_id)
    view = waiting.result(timeout=30)
    assert view.status is JobStatus.COMPLETED


def test_stream_events_resumes_after_a_database_outage(api: Api, own_pg: OwnPostgres,
                                                       client: Client) -> None:
    job_id = api.submit().json()["id"]
    events: list[ProgressEvent] = []

    async def follow() -> None:
        async for event in client.stream_events(job_id, retry_for=60):
            events.append(event)

    streaming = Background(lambda: asyncio.run(follow()))
    deadline = time.monotonic() + 10
    while not events:  # the submission's own event: the stream is open
        assert time.monotonic() < deadline, "no event arrived"
        time.sleep(0.05)
    _outage(api, own_pg, job_id, during=streaming)
    api.complete(job_id)
    streaming.result(timeout=30)  # ended by the server after the terminal event
    seqs = [e.seq for e in events]
    assert seqs == sorted(set(seqs)), seqs  # resumed after the last one: no gap, no repeat
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    statuses = [e.status for e in events if e.kind == "status"]
    assert statuses[-2:] == [JobStatus.RUNNING, JobStatus.COMPLETED], statuses


def test_wait_gives_up_on_an_outage_past_its_budget(api: Api, own_pg: OwnPostgres,
                                                    client: Client) -> None:
    job_id = api.submit().json()["id"]
    own_pg.stop()
    started = time.monotonic()
    with pytest.raises(ApiUnavailableError) as info:
        client.wait(job_id, retry_for=3)
    took = time.monotonic() - started
    assert 2.5 <= took <= 8, took
    err = info.value
    assert err.status == 503 and isinstance(err, ConnectionError)
    message = str(err)
    for words in (f"the Backtest API at {api.url} has been unavailable for", "answered 503",
                  "metadata database is unreachable", job_id, "is unaffected",
                  f"{api.url}/healthz", "retry_for="):
        assert words in message, message


def _dead_url() -> str:
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_an_unreachable_api_is_retried_then_reported() -> None:
    url = _dead_url()
    job_id = "00000000-0000-0000-0000-000000000000"
    with Client(url, token="t") as client:
        started = time.monotonic()
        with pytest.raises(ApiUnavailableError, match="the connection failed") as info:
            client.wait(job_id, retry_for=2)
        assert 1.5 <= time.monotonic() - started <= 6
        assert f"the Backtest API at {url} has been unavailable" in str(info.value)

        async def follow() -> None:
            async for _ in client.stream_events(job_id, retry_for=2):
                pass

        with pytest.raises(ApiUnavailableError, match="stopped trying to follow job"):
            asyncio.run(follow())


def test_answers_that_are_not_outages_are_not_retried(api: Api, client: Client) -> None:
    started = time.monotonic()
    with pytest.raises(ApiError) as info:
        client.wait("00000000-0000-0000-0000-000000000000", retry_for=30)
    assert info.value.status == 404 and not isinstance(info.value, ApiUnavailableError)
    assert time.monotonic() - started < 2
