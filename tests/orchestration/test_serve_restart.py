"""The embedded mode survives a crash: ``pitwall serve`` SIGKILLed mid-job, then restarted.

A real ``pitwall serve`` process (SQLite, the in-process queue, one worker thread, gVisor)
is killed while its job runs; a new ``serve`` on the same data dir recovers the job at
start-up, and the job completes exactly once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from conftest import PITWALL, ROOT, sleeper, spec
from pitwall_executor.jobs.researchers import create_researcher
from pitwall_executor.jobs.store import MetadataStore


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Serve:
    """``pitwall serve`` processes on one data dir, one after another."""

    data_dir: Path
    env: dict[str, str]
    token: str
    port: int = field(default_factory=_free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> subprocess.Popen[bytes]:
        log = (self.data_dir.parent / f"serve-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen([*PITWALL, "serve", "--port", str(self.port), "--workers", "1"],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return proc
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"pitwall serve did not come up:\n{self.log_tail()}")
            time.sleep(0.1)

    def get(self, job: str) -> dict[str, Any]:
        res = requests.get(f"{self.url}/v1/backtests/{job}", timeout=10,
                           headers={"Authorization": f"Bearer {self.token}"})
        res.raise_for_status()
        view: dict[str, Any] = res.json()
        return view

    def wait(self, job: str, done: Any, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not done(view := self.get(job)):
            if time.monotonic() > deadline:
                pytest.fail(f"job {job} stuck at {view['status']}:\n{self.log_tail()}")
            time.sleep(0.2)
        return view

    def log_tail(self) -> str:
        logs = sorted(self.data_dir.parent.glob("serve-*.log"))
        return "\n".join(p.read_text()[-3000:] for p in logs)


@pytest.fixture
def serve(tmp_path: Path, lake_dir: Path) -> Iterator[Serve]:
    tmp_path.chmod(0o755)
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITWALL_")}
    env.update({"PITWALL_DATA_DIR": str(data_dir), "PITWALL_LAKE_URL": str(lake_dir),
                "PITWALL_SANDBOX": "gvisor", "PYTHONUNBUFFERED": "1",
                # Heartbeat silence alone would take an hour: only start-up recovery helps.
                "PITWALL_STALE_AFTER_S": "3600"})
    store = MetadataStore(f"sqlite:///{data_dir / 'pitwall.db'}")
    token = create_researcher(store, "ada")
    store.close()
    running = Serve(data_dir, env, token)
    yield running
    for proc in running.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def test_a_job_of_a_killed_serve_completes_exactly_once_after_a_restart(serve: Serve) -> None:
    first = serve.start()
    res = requests.post(serve.url + "/v1/backtests", timeout=30,
                        headers={"Authorization": f"Bearer {serve.token}"},
                        files={"bundle": ("b.zip", sleeper(6)),
                               "spec": (None, spec().model_dump_json())})
    assert res.status_code == 202, res.text
    job = res.json()["id"]
    serve.wait(job, lambda v: v["status"] == "RUNNING" and v["progress"] >= 0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()

    store = MetadataStore(f"sqlite:///{serve.data_dir / 'pitwall.db'}")
    try:
        assert store.get(job).status.value == "RUNNING"  # what the dead serve left behind
        serve.start()
        view = serve.wait(job, lambda v: v["status"] not in ("PENDING", "RUNNING"))
        assert view["status"] == "COMPLETED", (view["reason"], serve.log_tail())
        assert view["attempt"] == 2 and view["metrics"] is not None
        with store.engine.connect() as conn:
            tries = conn.execute(sa.text("SELECT attempt, outcome FROM attempts WHERE "
                                         "job_id = :j ORDER BY attempt"), {"j": job}).all()
            metrics = conn.execute(sa.text("SELECT attempt FROM metrics WHERE job_id = :j"),
                                   {"j": job}).all()
            uris = conn.execute(sa.text("SELECT uri FROM artifacts WHERE job_id = :j"),
                                {"j": job}).scalars().all()
        assert [tuple(t) for t in tries] == [(1, "LOST"), (2, "COMPLETED")]
        assert [tuple(m) for m in metrics] == [(2,)]
        assert uris and all("/attempt-2/" in u for u in uris)
        statuses = [e.status for e in store.events(job) if e.kind == "status"]
        assert [s.value for s in statuses if s is not None].count("COMPLETED") == 1
    finally:
        store.close()
