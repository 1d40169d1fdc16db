"""The cluster tests' harness (fixtures imported by tests/cluster/test_nodes.py): several
nodes on one machine (tests/cluster/netkit.py), each running ``pitwall worker``
in gVisor with its own data dir and worker cache, reaching the harness's own PostgreSQL
and Redis only through its veth pair; the test process plays the API's part on loopback.

The lake is one local directory every node reads (the nodes share this machine's disk);
a lake in S3 reached through the veth pairs is not part of this harness yet.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from tests.cluster.netkit import CIDR, Node, require_root_tools
from tests.orchestration.conftest import (
    PITWALL,
    ROOT,
    SYMBOLS,
    RedisServer,
    spec,
    wait_view,
)
from tests.pgkit import OwnPostgres

from pitwall.models import JobStatus, JobView
from pitwall_executor.config import load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.stack import Stack

#: The heartbeat window the nodes' recovery judges other hosts' workers by.
STALE_AFTER_S = 5.0
NODES = 2


@dataclass
class Fabric:
    """The nodes, and the services they reach through their links."""

    nodes: list[Node]
    postgres: OwnPostgres
    redis: RedisServer
    lake: Path

    def stop_nodes(self) -> None:
        """Every node's link up and its processes gone (between runs)."""
        for node in self.nodes:
            node.heal()
            node.kill()
            node.procs.clear()

    def close(self) -> None:
        for node in self.nodes:
            node.destroy()
        self.redis.kill()
        self.postgres.destroy()


def start_fabric(root: Path, n: int) -> Fabric:
    """``n`` nodes and the services they reach, with the generated lake; ``close()`` it.
    Used by the fixture below and by bench/cluster.py."""
    nodes = [Node(i, root / f"node{i}") for i in range(1, n + 1)]
    for node in nodes:
        node.create()
    gateways = tuple(node.gateway for node in nodes)
    fabric = Fabric(nodes, OwnPostgres(listen=("127.0.0.1", *gateways), trust_cidr=CIDR),
                    RedisServer(root, bind=("127.0.0.1", *gateways)), root / "lake")
    try:
        fabric.postgres.start()
        fabric.redis.start()
        generate_dataset(Catalog(fabric.lake), "sample", symbols=SYMBOLS,
                         start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 8), seed=5)
    except BaseException:
        fabric.close()
        raise
    return fabric


@pytest.fixture(scope="module", name="fabric")
def fabric_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fabric]:
    require_root_tools()
    root = tmp_path_factory.mktemp("cluster")
    root.chmod(0o755)
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

    def worker(self, node: Node, *args: str) -> None:
        """Start ``pitwall worker`` on ``node`` (its own data dir, its link's addresses)."""
        node.data_dir.mkdir(exist_ok=True)
        node.data_dir.chmod(0o755)
        db, queue = self.url(node.gateway)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PITWALL_")}
        env.update({"PITWALL_DATA_DIR": str(node.data_dir), "PITWALL_DB_URL": db,
                    "PITWALL_QUEUE_URL": queue, "PITWALL_LAKE_URL": str(self.fabric.lake),
                    "PITWALL_SANDBOX": "gvisor", "PITWALL_STALE_AFTER_S": str(STALE_AFTER_S),
                    "PYTHONUNBUFFERED": "1"})
        proc = node.spawn([*PITWALL, "worker", "--log-level", "INFO", "--slots", "1",
                           "--grace", "5", *args], env, self.log(node), cwd=ROOT)
        self.workers.setdefault(node.index, []).append(proc.pid)

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
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / "api").mkdir(mode=0o755)
    db = fabric.postgres.url.rsplit("/", 1)[0] + f"/{database}"
    config = load_config(environ={"PITWALL_DB_URL": db, "PITWALL_QUEUE_URL": fabric.redis.url,
                                  "PITWALL_LAKE_URL": str(fabric.lake),
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
