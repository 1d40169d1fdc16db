"""The cluster tests' harness (fixtures imported by tests/cluster/test_nodes.py): several
nodes on one machine (tests/cluster/netkit.py), each running ``pitwall worker``
in gVisor with its own data dir and worker cache, and an API node running ``pitwall api``.
Every node reaches the harness's own PostgreSQL, Redis and S3 server only through its veth
pair: PostgreSQL and Redis listen on the links' host addresses, and S3 (moto on loopback)
is reached through one counting proxy per node, bound to that node's link. The lake and
the artifacts are in the bucket, so a node's data comes to it through its link and into
its own cache, as on separate machines. The test process submits and reads through the
API-side stack on loopback, or through the API node over HTTP.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.cluster.netkit import CIDR, Node, require_root_tools, unfence
from tests.orchestration.conftest import (
    PITWALL,
    ROOT,
    SYMBOLS,
    RedisServer,
    spec,
    wait_view,
)
from tests.pgkit import OwnPostgres
from tests.storage.s3_testserver import AWS_TEST_ENV, FaultProxy, _Server, start_moto, start_proxy

from pitwall.bundle import build_bundle
from pitwall.models import JobStatus, JobView
from pitwall_executor.config import load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.datalake.lake_files import push_dataset
from pitwall_executor.stack import Stack
from pitwall_executor.storage.s3 import S3ObjectStore

#: The heartbeat window the nodes' recovery judges other hosts' workers by.
STALE_AFTER_S = 5.0
NODES = 3
#: The API node's index: its namespace and link are made like a worker node's.
API_INDEX = 9
API_PORT = 8080
BUCKET = "pitwall-cluster"


@dataclass
class S3:
    """moto on loopback, and a counting proxy in front of it on every node's link."""

    moto: Any  # subprocess.Popen
    url: str  # moto itself, on loopback (the API-side stack and the lake's push)
    proxies: dict[int, tuple[_Server, FaultProxy, str]] = field(default_factory=dict)

    def endpoint(self, node: Node) -> str:
        """The S3 endpoint as ``node`` reaches it: its own proxy, on its link."""
        return self.proxies[node.index][2]

    def seen(self, node: Node) -> FaultProxy:
        """What ``node`` asked of S3 (the requests its proxy forwarded)."""
        return self.proxies[node.index][1]

    def close(self) -> None:
        for server, state, _url in self.proxies.values():
            state.release.set()
            server.shutdown()
            server.server_close()
        self.moto.terminate()
        self.moto.wait(10)


@dataclass
class Fabric:
    """The nodes, and the services they reach through their links."""

    nodes: list[Node]
    api: Node
    postgres: OwnPostgres
    redis: RedisServer
    s3: S3
    root: Path

    @property
    def lake_url(self) -> str:
        return f"s3://{BUCKET}/lake"

    def stop_nodes(self) -> None:
        """Every node's link up, its processes gone and its disk empty (between runs: the
        next run's nodes start cold)."""
        for node in (*self.nodes, self.api):
            node.heal()
            node.kill()
            node.procs.clear()
            shutil.rmtree(node.data_dir, ignore_errors=True)

    def close(self) -> None:
        for node in (*self.nodes, self.api):
            node.destroy()
        unfence()
        self.redis.kill()
        self.postgres.destroy()
        self.s3.close()


def start_fabric(root: Path, n: int) -> Fabric:
    """``n`` worker nodes, the API node and the services they reach, with the generated
    lake pushed to the bucket; ``close()`` it. Used by the fixture below and by
    bench/cluster.py. Needs AWS_TEST_ENV's credentials in the environment."""
    nodes = [Node(i, root / f"node{i}") for i in range(1, n + 1)]
    api = Node(API_INDEX, root / "api-node", name="api")
    for node in (*nodes, api):
        node.create()
    gateways = tuple(node.gateway for node in (*nodes, api))
    moto, moto_url = start_moto(root / "moto.log")
    s3 = S3(moto, moto_url)
    fabric = Fabric(nodes, api, OwnPostgres(listen=("127.0.0.1", *gateways), trust_cidr=CIDR),
                    RedisServer(root, bind=("127.0.0.1", *gateways)), s3, root)
    try:
        for node in (*nodes, api):
            s3.proxies[node.index] = start_proxy(moto_url, host=node.gateway)
        fabric.postgres.start()
        fabric.redis.start()
        local = Catalog(root / "local-lake")
        generate_dataset(local, "sample", symbols=SYMBOLS, start=dt.date(2024, 3, 1),
                         end=dt.date(2024, 3, 8), seed=5)
        store = S3ObjectStore.from_url(fabric.lake_url, endpoint_url=moto_url)
        try:
            store.ensure_bucket()
            push_dataset(local, "sample", store)
        finally:
            store.close()
    except BaseException:
        fabric.close()
        raise
    return fabric


@pytest.fixture(scope="module", name="fabric")
def fabric_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    require_root_tools()
    root = tmp_path_factory.mktemp("cluster")
    root.chmod(0o755)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in AWS_TEST_ENV.items():
            mp.setenv(name, value)
        fabric = start_fabric(root, NODES)
        try:
            yield fabric
        finally:
            fabric.close()


@dataclass
class Cluster:
    """One test's run on the fabric: a fresh database and queue, the API-side stack."""

    fabric: Fabric
    database: str
    stack: Stack
    logs: Path
    workers: dict[int, list[int]] = field(default_factory=dict)

    def url(self, address: str) -> tuple[str, str]:
        """(database URL, queue URL) as seen from ``address``'s side of a link."""
        db = self.fabric.postgres.url_at(address).rsplit("/", 1)[0] + f"/{self.database}"
        return db, f"redis://{address}:{self.fabric.redis.port}/0"

    @property
    def artifacts_url(self) -> str:
        return f"s3://{BUCKET}/artifacts-{self.database}"

    def node_env(self, node: Node) -> dict[str, str]:
        """The settings of a process on ``node``: every service at its link's addresses."""
        db, queue = self.url(node.gateway)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PITWALL_")}
        env.update(AWS_TEST_ENV)
        env.update({"PITWALL_DATA_DIR": str(node.data_dir), "PITWALL_DB_URL": db,
                    "PITWALL_QUEUE_URL": queue, "PITWALL_LAKE_URL": self.fabric.lake_url,
                    "PITWALL_S3_ENDPOINT_URL": self.fabric.s3.endpoint(node),
                    "PITWALL_STORE_URL": self.artifacts_url,
                    "PITWALL_SANDBOX": "gvisor", "PITWALL_STALE_AFTER_S": str(STALE_AFTER_S),
                    "PYTHONUNBUFFERED": "1"})
        return env

    def worker(self, node: Node, *args: str) -> None:
        """Start ``pitwall worker`` on ``node`` (its own data dir, its link's addresses)."""
        node.data_dir.mkdir(exist_ok=True)
        node.data_dir.chmod(0o755)
        proc = node.spawn([*PITWALL, "worker", "--log-level", "INFO", "--slots", "1",
                           "--grace", "5", *args], self.node_env(node), self.log(node),
                          cwd=ROOT)
        self.workers.setdefault(node.index, []).append(proc.pid)

    def api(self) -> str:
        """Start ``pitwall api`` on the API node; its URL once it answers (from the host,
        which reaches the node's address through the link)."""
        node = self.fabric.api
        node.data_dir.mkdir(exist_ok=True)
        node.spawn([*PITWALL, "api", "--host", node.address, "--port", str(API_PORT)],
                   self.node_env(node), self.log(node), cwd=ROOT)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection((node.address, API_PORT), timeout=0.5).close()
                return f"http://{node.address}:{API_PORT}"
            except OSError:
                assert time.monotonic() < deadline, f"the API never listened:\n{self.log_text()}"
                time.sleep(0.2)

    def log(self, node: Node) -> Path:
        return self.logs / f"{node.hostname}.log"

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}"
                         for p in sorted(self.logs.glob("*.log")))

    def submit(self, bundle: bytes) -> str:
        return self.stack.submit(spec(), bundle, researcher="ada")

    def wait(self, job_id: str, until: Callable[[JobView], bool], timeout: float,
             what: str) -> JobView:
        return wait_view(self.stack, job_id, until, timeout, lambda view: (
            f"job {job_id} never {what} (now {view.status}, attempt {view.attempt}); "
            f"logs:\n{self.log_text()}"))

    def rows(self, sql: str, **params: object) -> list[tuple[object, ...]]:
        with self.stack.store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]

    def attempts(self, job_id: str) -> list[tuple[object, ...]]:
        """(attempt, host, outcome) of every attempt of the job, in order."""
        return self.rows("SELECT attempt, host, outcome FROM attempts WHERE job_id = :j "
                         "ORDER BY attempt", j=job_id)


def on_node(c: Cluster, job_id: str, node: Node) -> Callable[[JobView], bool]:
    """The job's current attempt runs its strategy on ``node``."""
    def check(view: JobView) -> bool:
        if view.status is not JobStatus.RUNNING or view.progress < 0.1:
            return False
        rows = c.rows("SELECT host FROM attempts WHERE job_id = :j AND attempt = :a",
                      j=job_id, a=view.attempt)
        return rows == [(node.hostname,)]
    return check


def open_cluster(fabric: Fabric, run_dir: Path) -> Cluster:
    """A fresh database and an empty queue on ``fabric``, and the API-side stack (its data
    and the nodes' logs under ``run_dir``)."""
    database = f"cluster_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(fabric.postgres.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{database}"'))
    admin.dispose()
    fabric.redis.restart()
    for _server, seen, _url in fabric.s3.proxies.values():
        seen.reset()  # each run counts its own S3 requests
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "api").mkdir(mode=0o755)
    db = fabric.postgres.url.rsplit("/", 1)[0] + f"/{database}"
    config = load_config(environ={"PITWALL_DB_URL": db, "PITWALL_QUEUE_URL": fabric.redis.url,
                                  "PITWALL_LAKE_URL": fabric.lake_url,
                                  "PITWALL_S3_ENDPOINT_URL": fabric.s3.url,
                                  "PITWALL_STORE_URL": f"s3://{BUCKET}/artifacts-{database}",
                                  "PITWALL_SANDBOX": "gvisor"}, data_dir=run_dir / "api")
    return Cluster(fabric, database, Stack.from_config(config), run_dir / "logs")


@pytest.fixture(name="cluster")
def cluster_fixture(fabric: Fabric, tmp_path: Path) -> Iterator[Cluster]:
    c = open_cluster(fabric, tmp_path / "run")
    try:
        yield c
    finally:
        fabric.stop_nodes()
        c.stack.store.close()
        admin = sa.create_engine(fabric.postgres.url, isolation_level="AUTOCOMMIT")
        with contextlib.suppress(sa.exc.SQLAlchemyError), admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{c.database}" WITH (FORCE)'))
        admin.dispose()


SMA = build_bundle({"strategy.py": (ROOT / "examples" / "sma_crossover.py").read_bytes()},
                   entrypoint="strategy.py")


@dataclass
class LossRun:
    """A run of many jobs over every node, one node killed once half of them ended."""

    jobs: list[str]
    lost: Node
    lost_at: dt.datetime
    seconds: float  # first worker start to the last job's end
    queue_wait_s: list[float]  # per job: queued to its first attempt's start

    @property
    def jobs_per_min(self) -> float:
        return len(self.jobs) / self.seconds * 60

    def wait_quantile(self, q: float) -> float:
        waits = sorted(self.queue_wait_s)
        return waits[min(len(waits) - 1, int(q * len(waits)))]

    def summary(self) -> str:
        return (f"{len(self.jobs)} jobs, {self.lost.hostname} killed halfway: "
                f"{self.jobs_per_min:.1f} jobs/min over {self.seconds:.0f} s; queue wait "
                f"p50 {self.wait_quantile(0.5):.1f} s, p95 {self.wait_quantile(0.95):.1f} s, "
                f"max {max(self.queue_wait_s):.1f} s")


def run_losing_a_node(c: Cluster, n_jobs: int) -> LossRun:
    """Queue ``n_jobs`` SMA jobs, start a worker on every node, SIGKILL the last node once
    half of the jobs ended, and wait for every job to end."""
    jobs = [c.stack.submit(spec(fast=5, slow=30), SMA, researcher="ada")
            for _ in range(n_jobs)]
    started = time.monotonic()
    for node in c.fabric.nodes:
        c.worker(node)
    lost = c.fabric.nodes[-1]
    terminal = ", ".join(f"'{s.value}'" for s in JobStatus if s.terminal)
    ended = f"SELECT count(*) FROM jobs WHERE kind = 'run' AND status IN ({terminal})"
    deadline = time.monotonic() + 60 + 6 * n_jobs
    while c.rows(ended)[0][0] < n_jobs // 2:
        assert time.monotonic() < deadline, f"half the jobs never ended:\n{c.log_text()}"
        time.sleep(0.5)
    lost.signal(signal.SIGKILL)
    lost_at = dt.datetime.now(dt.UTC)
    for job in jobs:
        c.wait(job, lambda v: v.status.terminal, max(60.0, deadline - time.monotonic()),
               "ended")
    seconds = time.monotonic() - started
    waits = c.rows("SELECT EXTRACT(EPOCH FROM a.started_at - j.created_at) FROM jobs j "
                   "JOIN attempts a ON a.job_id = j.id AND a.attempt = 1 "
                   "WHERE j.kind = 'run'")
    return LossRun(jobs, lost, lost_at, seconds, [float(w) for (w,) in waits])
