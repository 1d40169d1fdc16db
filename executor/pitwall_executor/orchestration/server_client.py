"""``pitwall run`` beside a running embedded stack: submit over its API, wait for the end.

The stack that owns the data dir (:mod:`.ownership`) runs the job, so it shows in the
lab's panel and runs exactly once. A 503 or a dropped connection is retried with backoff
(the server's database may be restarting); if the server itself goes away, the caller
runs the job in its own process (:class:`ServerGoneError`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from pitwall.errors import InfrastructureError, PitwallError
from pitwall.models import BacktestSpec, JobStatus
from pitwall_executor.orchestration.ownership import ServerInfo, held

log = logging.getLogger(__name__)
POLL_S = 0.1  # a running job's status read is one cheap GET
SUBMIT_WITHIN_S = 60.0  # a 503 at submission (the database restarting) is retried this long
MAX_PAUSE_S = 5.0


class ServerGoneError(InfrastructureError):
    """The embedded stack that was running the job stopped."""


def submit(server: ServerInfo, spec: BacktestSpec, bundle: bytes,
           grid: dict[str, list[Any]] | None = None) -> str:
    """Submit a job (or a sweep, with ``grid``) to ``server``; its id."""
    files: dict[str, tuple[str, bytes, str]] = {
        "bundle": ("bundle.zip", bundle, "application/zip"),
        "spec": ("spec.json", spec.submission_json(), "application/json"),
    }
    if grid is not None:
        files["grid"] = ("grid.json", json.dumps(grid).encode(), "application/json")
    path = "/v1/sweeps" if grid is not None else "/v1/backtests"
    deadline = time.monotonic() + SUBMIT_WITHIN_S
    pause = POLL_S
    with _client(server) as http:
        while True:
            # A connection dropped mid-POST is not retried: the job may exist already.
            res = http.post(path, files=files)
            if res.status_code != 503 or time.monotonic() + pause > deadline:
                return str(_body(res)["id"])
            time.sleep(pause)
            pause = min(2 * pause, MAX_PAUSE_S)


def wait(server: ServerInfo, job_id: str, data_dir: Path,
         on_view: Callable[[dict[str, Any]], None] = lambda _v: None) -> JobStatus:
    """Poll ``server`` until the job ends; its final status. Raises
    :class:`ServerGoneError` once the server no longer holds the data dir."""
    pause = POLL_S
    with _client(server) as http:
        while True:
            try:
                res = http.get(f"/v1/backtests/{job_id}")
            except httpx.TransportError as exc:
                res, failure = None, str(exc)
            if res is not None and res.status_code != 503:
                view = _body(res)
                on_view(view)
                status = JobStatus(view["status"])
                if status.terminal:
                    return status
                pause = POLL_S
            else:
                if not held(data_dir):
                    raise ServerGoneError(f"the Backtest API at {server.url} stopped while job "
                                          f"{job_id} was not finished")
                if res is not None:
                    failure = "503"
                log.info("job %s: the API did not answer (%s); retrying", job_id, failure)
                pause = min(2 * pause, MAX_PAUSE_S)
            time.sleep(pause)


def _client(server: ServerInfo) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30.0, trust_env=False,  # loopback
                        headers={"Authorization": f"Bearer {server.token}"})


def _body(res: httpx.Response) -> dict[str, Any]:
    try:
        body: dict[str, Any] = res.json()
    except ValueError:
        body = {"message": res.text}
    if res.status_code >= 400:
        raise PitwallError(str(body.get("message") or body.get("error") or res.text))
    return body
