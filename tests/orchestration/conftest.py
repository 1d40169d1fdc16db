"""Real worker processes (``pitwall worker``) against PostgreSQL, a private Redis and gVisor.

Each test gets its own redis-server (a spare port, a temp dir, no persistence) so that
killing or restarting it never touches the shared one, and its own PostgreSQL database.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from pitwall.bundle import build_bundle
from pitwall.models import BacktestSpec, JobStatus, JobView, Limits
from pitwall_executor.config import Config, load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
PITWALL = [sys.executable, "-m", "pitwall_executor.cli"]
SYMBOLS = ["AAPL", "MSFT"]


def sleeper(seconds: float) -> bytes:
    """A bundle whose strategy sleeps, then holds nothing."""
    code = (f"import time\nimport polars as pl\nimport pitwall\n\n@pitwall.vectorized\n"
            f"def s(bars, **params):\n    time.sleep({seconds})\n"
            f"    return bars.select('ts', 'symbol', weight=pl.lit(0.0))\n")
    return build_bundle({"strategy.py": code.encode()}, entrypoint="strategy.py")


def spec(*, audit: bool = False, **params: object) -> BacktestSpec:
    """The jobs of these tests. The lookahead audit is off unless asked for: it re-runs the
    strategy in fresh sandboxes, which multiplies a sleeper's sleep and is not what these
    tests are about (tests/engine and tests/security run it)."""
    return BacktestSpec(dataset="sample", universe=SYMBOLS, start=dt.date(2024, 3, 4),
                        end=dt.date(2024, 3, 6), params=params,  # type: ignore[arg-type]
                        limits=Limits(timeout_s=120, memory_mb=512), audit=audit)


class RedisServer:
    """A redis-server of our own; ``restart()`` brings it back with its data gone."""

    def __init__(self, workdir: Path, bind: tuple[str, ...] = ("127.0.0.1",)) -> None:
        self.workdir = workdir
        self.bind = bind
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed; run `make services` (scripts/services.sh)")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", *self.bind,
             "--protected-mode", "no", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                client.close()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        pytest.fail(f"our redis-server on port {self.port} did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def run_id(self) -> str:
        """The server's run id: a new one after every start."""
        client = redis.Redis.from_url(self.url)
        try:
            return str(client.info("server")["run_id"])
        finally:
            client.close()

    def restart(self) -> None:
        self.kill()
        self.start()


@dataclass
class Cluster:
    """The deployment under test: config, a stack for submitting, worker processes."""

    config: Config
    env: dict[str, str]
    stack: Stack
    logs: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def worker(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``pitwall worker`` with ``args``; its log goes to ``logs/``."""
        return self.spawn("worker", "--log-level", "INFO", *args, **env)

    def spawn(self, command: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``pitwall <command> <args>``; its log goes to ``logs/``."""
        log = (self.logs / f"{command}-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen([*PITWALL, command, *args], env={**self.env, **env},
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append(proc)
        return proc

    def submit(self, bundle: bytes, researcher: str = "ada", **params: object) -> str:
        return self.stack.submit(spec(**params), bundle, researcher=researcher)

    def wait(self, job_id: str, until: Callable[[JobView], bool], timeout: float = 120,
             ) -> JobView:
        return wait_view(self.stack, job_id, until, timeout, lambda view: (
            f"job {job_id} stuck at {view.status} ({view.reason}); "
            f"worker logs:\n{self.log_tail()}"))

    def wait_done(self, job_id: str, timeout: float = 120) -> JobView:
        """The job once it has ended and, when a backtest COMPLETED, once its worker recorded
        the files written after the commit (the ``artifacts`` event: the report, the ledgers).
        A sweep parent never runs, so it has no such files."""
        view = self.wait(job_id, lambda v: v.status.terminal, timeout)
        if view.status is JobStatus.COMPLETED and view.kind == "backtest":
            self.wait(job_id, lambda v: any(e.kind == "artifacts"
                                            for e in self.stack.store.events(job_id)), 60)
        return view

    def log_tail(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.logs.glob("*.log")))

    def log_text(self) -> str:
        """Every process's whole log."""
        return "\n".join(p.read_text() for p in sorted(self.logs.glob("*.log")))

    def rows(self, sql: str, **params: object) -> list[tuple[object, ...]]:
        with self.stack.store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]


def wait_view(stack: Stack, job_id: str, until: Callable[[JobView], bool], timeout: float,
              failure: Callable[[JobView], str]) -> JobView:
    """The job's view once ``until`` holds; fails with ``failure(view)`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        view = stack.store.get(job_id)
        if until(view):
            return view
        if time.monotonic() > deadline:
            pytest.fail(failure(view))
        time.sleep(0.1)


def running(view: JobView) -> bool:
    """The sandbox of the job's current attempt has started (the data is loaded)."""
    return view.status is JobStatus.RUNNING and view.progress >= 0.1


@pytest.fixture(scope="session")
def lake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("orch-lake")
    generate_dataset(Catalog(root), "sample", symbols=SYMBOLS, start=dt.date(2024, 3, 1),
                     end=dt.date(2024, 3, 8), seed=5)
    return root


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def make_cluster(tmp_path: Path, pg_url: str, lake_dir: Path, redis_server: RedisServer,
                 ) -> Iterator[Callable[..., Cluster]]:
    clusters: list[Cluster] = []

    def make(**settings: str) -> Cluster:
        data_dir = tmp_path / "data"
        data_dir.mkdir(exist_ok=True)
        data_dir.chmod(0o755)
        tmp_path.chmod(0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PITWALL_")}
        env.update({"PITWALL_DATA_DIR": str(data_dir), "PITWALL_DB_URL": pg_url,
                    "PITWALL_QUEUE_URL": redis_server.url, "PITWALL_LAKE_URL": str(lake_dir),
                    "PITWALL_SANDBOX": "gvisor", "PITWALL_STALE_AFTER_S": "5",
                    "PYTHONUNBUFFERED": "1"})
        env.update({f"PITWALL_{k.upper()}": v for k, v in settings.items()})
        config = load_config(environ=env)
        logs = tmp_path / "logs"
        logs.mkdir(exist_ok=True)
        cluster = Cluster(config, env, Stack.from_config(config), logs)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        for proc in cluster.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        cluster.stack.store.close()
