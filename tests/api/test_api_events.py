"""The events WebSocket: replays from an event id, pushes new events, closes at the end."""

from __future__ import annotations

import json

import pytest
import websocket
from apikit import Api

from pitwall.models import JobStatus


def _connect(api: Api, job: str, after: int | None = None, who: str = "alice"
             ) -> websocket.WebSocket:
    query = "" if after is None else f"?after={after}"
    return websocket.create_connection(
        api.url.replace("http://", "ws://") + f"/v1/backtests/{job}/events{query}",
        header=[f"Authorization: Bearer {api.tokens[who]}"], timeout=10)


def _drain(ws: websocket.WebSocket, codes: list[int] | None = None) -> list[dict[str, object]]:
    """Every event until the server closes; its close code is appended to ``codes``."""
    out = []
    try:
        while True:
            opcode, data = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                if codes is not None:
                    codes.append(int.from_bytes(data[:2], "big"))
                return out
            out.append(json.loads(data))
    finally:
        ws.close()


def test_events_stream_live_and_resume_from_an_event_id(api: Api) -> None:
    job = api.submit().json()["id"]
    ws = _connect(api, job)
    first = json.loads(ws.recv())
    assert (first["seq"], first["kind"], first["status"]) == (1, "status", "PENDING")
    store = api.stack.store
    attempt = store.start_attempt(job, "test-worker")
    assert attempt is not None
    running = json.loads(ws.recv())  # pushed while the socket is open
    assert (running["seq"], running["status"]) == (2, "RUNNING")
    store.set_progress(job, attempt, 0.5, "half way")
    progress = json.loads(ws.recv())
    assert (progress["seq"], progress["kind"], progress["progress"]) == (3, "progress", 0.5)
    assert progress["message"] == "half way"
    assert store.finish(job, attempt, JobStatus.FAILED, reason="boom")
    codes: list[int] = []
    rest = _drain(ws, codes)
    assert [(e["seq"], e["status"]) for e in rest] == [(4, "FAILED")]
    assert codes == [1000]

    resumed = _drain(_connect(api, job, after=2))
    assert [e["seq"] for e in resumed] == [3, 4]
    assert _drain(_connect(api, job, after=4)) == []
    assert [e["seq"] for e in _drain(_connect(api, job))] == [1, 2, 3, 4]


def test_events_of_someone_elses_job_are_not_found(api: Api) -> None:
    job = api.submit("bob").json()["id"]
    with pytest.raises(websocket.WebSocketBadStatusException) as err:
        _connect(api, job, who="alice")
    assert err.value.status_code == 404
    with pytest.raises(websocket.WebSocketBadStatusException) as bad:
        _connect(api, job, after=-1, who="bob")
    assert bad.value.status_code == 400
    plain = api.get(f"/v1/backtests/{job}/events", "bob")
    assert plain.status_code == 400 and "WebSocket" in plain.json()["message"]
