"""The events WebSocket of the server extension (``/pitwall/events/{id}``) in a real Jupyter
server, relaying the embedded Backtest API's stream of a real event-driven job in gVisor."""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

import pytest
import tornado.httpclient
import tornado.websocket
from tests.jupyter.jpkit import notebook
from tests.strategies import slow_event

from pitwall.models import ProgressEvent

pytest_plugins = ["pytest_jupyter.jupyter_server"]

SLOW_EVENT = slow_event(0.004)
SPEC = {"dataset": "sample", "universe": ["AAPL", "MSFT"], "start": "2024-03-04",
        "end": "2024-03-05", "engine": "event"}




async def submit(jp_fetch: Any) -> str:
    resp = await jp_fetch("pitwall", "submit", method="POST", raise_error=False,
                          body=json.dumps({"notebook": notebook(SLOW_EVENT), "active_cell": 0,
                                           "spec": SPEC}))
    assert resp.code == 202, resp.body
    return str(json.loads(resp.body)["id"])


async def read_all(ws: Any) -> tuple[list[str], int | None]:
    """Every message until the server closes the socket, and its close code."""
    out = []
    while (message := await ws.read_message()) is not None:
        out.append(message)
    return out, ws.close_code


async def test_unauthenticated_and_unknown_jobs_are_refused(
        jp_fetch: Any, jp_ws_fetch: Any, jp_base_url: str, jp_http_port: int) -> None:
    await jp_fetch("api", "status")  # the server is up
    url = f"ws://localhost:{jp_http_port}{jp_base_url}pitwall/events/some-job"
    with pytest.raises(tornado.httpclient.HTTPClientError) as anonymous:
        await tornado.websocket.websocket_connect(url)
    assert anonymous.value.code == 403
    with pytest.raises(tornado.httpclient.HTTPClientError) as forged:  # not a Jupyter token
        await tornado.websocket.websocket_connect(tornado.httpclient.HTTPRequest(
            url, headers={"Authorization": f"Bearer {os.environ['PITWALL_TOKEN']}"}))
    assert forged.value.code == 403
    with pytest.raises(tornado.httpclient.HTTPClientError) as unknown:
        await jp_ws_fetch("pitwall", "events", "no-such-job")
    assert unknown.value.code == 404
    with pytest.raises(tornado.httpclient.HTTPClientError) as bad:
        await jp_ws_fetch("pitwall", "events", "no-such-job", params={"after": "-1"})
    assert bad.value.code == 400


async def test_the_running_equity_is_relayed_live_and_resumes_after_a_seq(
        jp_fetch: Any, jp_ws_fetch: Any) -> None:
    token = os.environ["PITWALL_TOKEN"]
    job_id = await submit(jp_fetch)
    ws = await jp_ws_fetch("pitwall", "events", job_id)
    # Read live until the first progress event with equity, then drop the connection.
    seen: list[ProgressEvent] = []
    while not (seen and seen[-1].equity):
        message = await ws.read_message()
        assert message is not None, [e.model_dump() for e in seen]
        assert token not in message
        seen.append(ProgressEvent.model_validate_json(message))
    ws.close()
    first = seen[-1]
    assert first.kind == "progress" and first.job_id == job_id
    job = json.loads((await jp_fetch("pitwall", "api", "v1", "backtests", job_id)).body)
    # It arrived while the job ran, not at the end.
    assert job["status"] == "RUNNING", (job["status"], job["reason"], first)

    # Resume after the last seq seen: the rest, nothing repeated, then a clean close.
    ws = await jp_ws_fetch("pitwall", "events", job_id, params={"after": str(first.seq)})
    messages, code = await read_all(ws)
    assert code == 1000, (code, messages[-3:])
    assert all(token not in m for m in messages)
    rest = [ProgressEvent.model_validate_json(m) for m in messages]
    assert [e.seq for e in rest] == list(range(first.seq + 1, first.seq + 1 + len(rest)))
    # the last status event (the ``artifacts`` event of the report may follow it)
    last = [e for e in rest if e.kind == "status"][-1]
    assert last.status is not None and last.status.value == "COMPLETED", last.message
    assert all(e.kind == "artifacts" for e in rest[rest.index(last) + 1:])
    more = [e for e in rest if e.equity]
    assert more, f"the curve did not grow after the resume: {messages}"
    stamps = [ts for e in [first, *more] for ts, _ in (e.equity or [])]
    assert stamps == sorted(set(stamps))
    # The relayed points lie on the job's final curve.
    curve = json.loads((await jp_fetch("pitwall", "equity", job_id)).body)
    final = {dt.datetime.fromisoformat(ts).timestamp(): v
             for ts, v in zip(curve["ts"], curve["equity"], strict=True)}
    for ts, value in (p for e in [first, *more] for p in (e.equity or [])):
        assert final[ts / 1000] == pytest.approx(value, rel=1e-9)
