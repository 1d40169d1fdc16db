"""One embedded stack per data dir: ``pitwall run`` beside ``pitwall serve`` (real processes,
SQLite, the in-process queue, gVisor).

``pitwall run`` while a server runs the data dir's jobs submits to it (the job shows in the
server's API and runs once); a server started while ``pitwall run`` runs its own job
leaves that job to it (its worker is alive); a second server on the data dir is refused.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from faultkit import leftovers
from tests.pgkit import free_port

from conftest import PITWALL, ROOT
from pitwall.models import JobStatus
from pitwall_executor.config import load_config
from pitwall_executor.jobs.store import MetadataStore

pytestmark = pytest.mark.sandbox
STRATEGY = """\
import time
import polars as pl
import pitwall

@pitwall.vectorized
def s(bars, seconds=0.0):
    time.sleep(seconds)
    return bars.select("ts", "symbol", weight=pl.lit(0.0))
"""


@dataclass
class DataDir:
    """Processes of one data dir: ``pitwall serve`` and ``pitwall run``."""

    root: Path
    env: dict[str, str]
    store: MetadataStore
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.root / "data"

    def serve(self) -> tuple[subprocess.Popen[bytes], str]:
        port = free_port()
        log = (self.root / f"serve-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen([*PITWALL, "serve", "--port", str(port), "--workers", "1"],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                # Up for local clients once it answers and has published itself (the
                # server writes embedded.json just after it starts listening).
                if (requests.get(f"{url}/healthz", timeout=2).status_code == 200
                        and (self.path / "embedded.json").exists()):
                    return proc, url
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"pitwall serve did not come up:\n{self.logs()}")
            time.sleep(0.1)

    def run(self, seconds: float) -> subprocess.Popen[bytes]:
        """``pitwall run`` of a strategy that sleeps ``seconds``."""
        strategy = self.root / "strategy.py"
        strategy.write_text(STRATEGY)
        proc = subprocess.Popen(
            [*PITWALL, "run", str(strategy), "--symbols", "AAPL,MSFT", "--start", "2024-03-04",
             "--end", "2024-03-06", "--param", f"seconds={seconds}", "--no-audit"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.root.glob("*.log")))

    def outcomes(self, job: str) -> list[tuple[object, ...]]:
        with self.store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(
                "SELECT attempt, worker, outcome FROM attempts WHERE job_id = :j "
                "ORDER BY attempt"), {"j": job})]

    def metrics_rows(self, job: str) -> int:
        with self.store.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM metrics WHERE job_id = :j"),
                                    {"j": job}).scalar_one())


@pytest.fixture
def data_dir(tmp_path: Path, lake_dir: Path) -> Iterator[DataDir]:
    tmp_path.chmod(0o755)
    (tmp_path / "data").mkdir(mode=0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITWALL_")}
    env.update({"PITWALL_DATA_DIR": str(tmp_path / "data"), "PITWALL_LAKE_URL": str(lake_dir),
                "PITWALL_SANDBOX": "gvisor", "PITWALL_STALE_AFTER_S": "5",
                "PYTHONUNBUFFERED": "1"})
    store = MetadataStore(load_config(environ=env).database_url)
    d = DataDir(tmp_path, env, store)
    yield d
    for proc in d.procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    store.close()


def _job_of(output: bytes) -> str:
    match = re.search(r"job ([0-9a-f-]{36}): (\w+)", output.decode())
    assert match is not None, output
    return match.group(1)


def test_pitwall_run_submits_to_the_embedded_server_of_its_data_dir(data_dir: DataDir) -> None:
    serve, url = data_dir.serve()
    published = data_dir.path / "embedded.json"
    assert stat.S_IMODE(published.stat().st_mode) == 0o600
    info = json.loads(published.read_text())
    assert info["url"] == url and info["pid"] == serve.pid

    run = data_dir.run(0.5)
    out, err = run.communicate(timeout=240)
    assert run.returncode == 0, (out, err, data_dir.logs())
    assert b"submitted to the Pitwall server of this data dir" in err
    job = _job_of(out)
    assert b": COMPLETED" in out
    # The server ran it (its worker), once; its API lists it to the server's researcher.
    [(attempt, worker, outcome)] = data_dir.outcomes(job)
    assert (attempt, outcome) == (1, "COMPLETED") and str(worker).startswith(
        f"embedded-{serve.pid}-"), worker
    assert data_dir.metrics_rows(job) == 1
    listed = requests.get(f"{url}/v1/backtests", timeout=10,
                          headers={"Authorization": f"Bearer {info['token']}"}).json()
    assert [(j["id"], j["status"]) for j in listed["items"]] == [(job, "COMPLETED")]

    # A second server on the same data dir is refused, saying where the first one is.
    second = subprocess.run([*PITWALL, "serve", "--port", str(free_port()), "--workers", "1"],
                            env=data_dir.env, capture_output=True, timeout=120, cwd=ROOT,
                            check=False)
    assert second.returncode != 0
    assert b"another Pitwall server runs the jobs of" in second.stderr + second.stdout
    assert url.encode() in second.stderr + second.stdout

    serve.terminate()
    assert serve.wait(timeout=60) == 0
    assert not published.exists()
    assert leftovers(data_dir.path) == []


def test_a_server_started_beside_a_running_pitwall_run_leaves_its_job_alone(
        data_dir: DataDir) -> None:
    run = data_dir.run(8)  # no server yet: this process runs its own job
    deadline = time.monotonic() + 120
    while True:
        running = data_dir.store.list_jobs(status=JobStatus.RUNNING)
        if running and running[0].progress >= 0.1:
            job = running[0].id
            break
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.1)
    serve, _url = data_dir.serve()  # recovers at start-up: must not take the live job
    out, err = run.communicate(timeout=240)
    assert run.returncode == 0, (out, err, data_dir.logs())
    assert _job_of(out) == job and b": COMPLETED" in out
    assert b"submitted to the Pitwall server" not in err
    [(attempt, worker, outcome)] = data_dir.outcomes(job)
    assert (attempt, outcome) == (1, "COMPLETED")
    assert f":{run.pid}:" in str(worker)  # the terminal's process ran it, once
    assert data_dir.metrics_rows(job) == 1
    serve.terminate()
    assert serve.wait(timeout=60) == 0
    assert leftovers(data_dir.path) == []


def test_an_interrupted_pitwall_run_cancels_its_job(data_dir: DataDir) -> None:
    run = data_dir.run(60)  # no server: this process runs its own job
    deadline = time.monotonic() + 120
    while not (running := data_dir.store.list_jobs(status=JobStatus.RUNNING)) or \
            running[0].progress < 0.1:
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.1)
    run.send_signal(signal.SIGINT)  # Ctrl-C in the terminal
    run.communicate(timeout=60)
    assert run.returncode != 0
    view = data_dir.store.get(running[0].id)
    # Not left RUNNING for a worker that is gone, nor PENDING for none to run.
    assert view.status is JobStatus.CANCELLED
    assert view.reason is not None and "`pitwall run` was interrupted" in view.reason
    assert [o for _, _, o in data_dir.outcomes(view.id)] == ["CANCELLED"]
    deadline = time.monotonic() + 15
    while left := leftovers(data_dir.path):  # the sandbox goes with its worker
        assert time.monotonic() < deadline, left
        time.sleep(0.5)
