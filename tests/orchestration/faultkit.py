"""What the fault tests share: a private PostgreSQL, worker health, and the checks every
fault ends with (each job terminal exactly once, workers running jobs again, nothing left).

Like the private redis-server of ``conftest.py``, the PostgreSQL here is our own cluster
(``initdb`` + ``pg_ctl`` in a temp dir, on a free port, as the postgres user), so stopping
it never touches the machine's server.
"""

from __future__ import annotations

import contextlib
import glob
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import requests
from tests.pgkit import free_port

from conftest import Cluster, sleeper, spec
from pitwall.models import JobStatus


def health(port: int) -> tuple[int, dict[str, Any]]:
    """A worker's ``/healthz``: the status code and its JSON."""
    res = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    return res.status_code, res.json()


def wait_healthy(port: int, timeout: float = 60) -> dict[str, Any]:
    """Wait for a worker's health endpoint to say every loop is up."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(requests.ConnectionError):
            status, body = health(port)
            if status == 200 and all(loop["state"] == "up" for loop in body["loops"].values()):
                return body
        if time.monotonic() > deadline:
            pytest.fail(f"the worker on health port {port} did not come up healthy")
        time.sleep(0.2)


def worker_up(port: int) -> dict[str, float]:
    """``pitwall_worker_up`` by loop, from a worker's ``/metrics``."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out = {}
    for line in text.splitlines():
        if line.startswith('pitwall_worker_up{loop="'):
            name = line.split('"')[1]
            out[name] = float(line.rsplit(" ", 1)[1])
    return out


def start_workers(c: Cluster, n: int, *args: str) -> list[int]:
    """``n`` worker processes of one slot each, with health ports; their ports, once up."""
    ports = [free_port() for _ in range(n)]
    for port in ports:
        c.worker("--slots", "1", "--grace", "5", "--health-port", str(port),
                 "--health-host", "127.0.0.1", *args)
    for port in ports:
        wait_healthy(port)
    return ports


def start_api(c: Cluster) -> str:
    """``pitwall api`` on the cluster's database, as researchers reach it; its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = c.spawn("api", "--port", str(port))
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(requests.ConnectionError):
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return url
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"pitwall api did not come up:\n{c.log_tail()}")
        time.sleep(0.2)


def each_ended_once(c: Cluster, jobs: Iterable[str]) -> None:
    """Every job terminal; a completed one has one metrics row, of its completing attempt,
    and exactly one attempt that ended COMPLETED."""
    for job in jobs:
        view = c.stack.store.get(job)
        assert view.status.terminal, (job, view.status)
        outcomes = [r[0] for r in c.rows(
            "SELECT outcome FROM attempts WHERE job_id = :j ORDER BY attempt", j=job)]
        assert None not in outcomes, (job, outcomes)  # no attempt left open
        metrics = c.rows("SELECT attempt FROM metrics WHERE job_id = :j", j=job)
        if view.status is JobStatus.COMPLETED:
            assert metrics == [(view.attempt,)], (job, metrics)
            assert outcomes.count("COMPLETED") == 1 and outcomes[-1] == "COMPLETED", outcomes
        else:
            assert metrics == [], (job, metrics)


def runs_jobs_again(c: Cluster, ports: Iterable[int]) -> None:
    """The same worker processes, never restarted, are healthy and complete a new job."""
    assert all(p.poll() is None for p in c.procs), c.log_tail()
    for port in ports:
        status, body = health(port)
        assert status == 200, body
        assert set(worker_up(port).values()) == {1.0}
    job = c.submit(sleeper(0))
    view = c.wait_done(job, timeout=60)
    assert view.status is JobStatus.COMPLETED, view.reason


def stop_workers(c: Cluster) -> None:
    """SIGTERM every worker: each exits 0 within its grace period."""
    for proc in c.procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in c.procs:
        assert proc.wait(timeout=60) == 0, c.log_tail()


def leftovers(data_dir: Path) -> list[str]:
    """Processes (runsc sandboxes, workers) whose command line names ``data_dir``, and files
    left under its job work dirs."""
    found = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        pid = int(cmdline.split("/")[2])
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            args = Path(cmdline).read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(data_dir) in args:
                found.append(f"pid {pid}: {args[:200]}")
    jobs_dir = data_dir / "jobs"
    if jobs_dir.is_dir():
        found += [str(p) for p in jobs_dir.rglob("*") if p.is_file()]
    return found


def submit_quiet(c: Cluster, seconds: float) -> str:
    """A job that sleeps ``seconds`` once (no audit re-runs)."""
    return c.stack.submit(spec(), sleeper(seconds),
                          researcher="ada")
