"""Faults of whole nodes, with real network partitions (issue 16): each node a network
namespace running ``pitwall worker`` in gVisor; a job taken from a lost node completes
exactly once on another, and the lost node's late result is fenced."""

from __future__ import annotations

import datetime as dt
import signal
import time

# The harness's fixtures come from a module, not a conftest.py: the orchestration tests
# import their own conftest by the bare name ``conftest``, which a second conftest.py
# loaded after theirs would take over.
from tests.cluster.clusterkit import (  # noqa: F401  (fixtures, used by name)
    STALE_AFTER_S,
    Cluster,
    cluster_fixture,
    fabric_fixture,
    on_node,
)
from tests.cluster.netkit import Node
from tests.orchestration.conftest import sleeper

from pitwall.models import JobStatus

#: Long enough that the lost node is still mid-job when the other takes it over.
SLEEP_S = 20


def fenced(log: str, job: str) -> bool:
    """The worker found its attempt taken back (by its heartbeat, or when it came to
    commit) and dropped it."""
    return any(job in line and "attempt 1 was taken back" in line
               for line in log.splitlines())


def running_on(c: Cluster, first: Node, then: Node) -> str:
    """A sleeping job running on ``first`` (the only worker when it was claimed), with a
    worker on ``then`` started afterwards, ready to take it over."""
    job = c.submit(sleeper(SLEEP_S))
    c.worker(first)
    c.wait(job, on_node(c, job, first), 180, f"ran on {first.hostname}")
    c.worker(then)
    return job


def exactly_once(c: Cluster, job: str) -> None:
    """One COMPLETED job, one metrics row, one COMPLETED status event."""
    assert c.stack.store.get(job).status is JobStatus.COMPLETED
    assert c.rows("SELECT count(*) FROM metrics WHERE job_id = :j", j=job) == [(1,)]
    done = [e for e in c.stack.store.events(job)
            if e.kind == "status" and e.status is JobStatus.COMPLETED]
    assert len(done) == 1


def test_a_partitioned_nodes_job_completes_once_elsewhere_and_its_late_result_is_fenced(
        cluster: Cluster) -> None:
    c = cluster
    lost, other = c.fabric.nodes[:2]
    job = running_on(c, lost, other)
    lost.partition()
    cut_at = dt.datetime.now(dt.UTC)
    view = c.wait(job, lambda v: v.status is JobStatus.COMPLETED, 240,
                  f"completed on {other.hostname}")
    assert view.attempt == 2
    [(started,)] = c.rows("SELECT started_at FROM attempts WHERE job_id = :j AND attempt = 2",
                          j=job)
    # Taken back once its last heartbeat is a window old (the last beat came before the
    # cut), then claimed by the other node: within twice the window (issue 16's goal).
    takeover_s = (started - cut_at).total_seconds()
    assert 0 < takeover_s <= 2 * STALE_AFTER_S, takeover_s
    assert c.attempts(job) == [(1, lost.hostname, "LOST"), (2, other.hostname, "COMPLETED")]

    lost.heal()  # the lost node reaches the database again, its sandbox still sleeping
    deadline = time.monotonic() + 120
    while not fenced(c.log(lost).read_text(), job):
        assert time.monotonic() < deadline, c.log_text()
        time.sleep(0.5)
    time.sleep(2)  # whatever it might still write would land now
    exactly_once(c, job)
    assert c.attempts(job) == [(1, lost.hostname, "LOST"), (2, other.hostname, "COMPLETED")]


def test_a_killed_nodes_job_completes_once_on_another(cluster: Cluster) -> None:
    c = cluster
    dead, other = c.fabric.nodes[:2]
    job = running_on(c, dead, other)
    dead.signal(signal.SIGKILL)
    view = c.wait(job, lambda v: v.status is JobStatus.COMPLETED, 240,
                  f"completed on {other.hostname}")
    assert view.attempt == 2
    exactly_once(c, job)
    assert c.attempts(job) == [(1, dead.hostname, "LOST"), (2, other.hostname, "COMPLETED")]


def test_the_services_cut_from_every_node_for_20s_loses_nothing(cluster: Cluster) -> None:
    c = cluster
    nodes = c.fabric.nodes
    jobs = [c.submit(sleeper(12)) for _ in range(2 * len(nodes))]
    for node in nodes:
        c.worker(node)
    c.wait(jobs[0], lambda v: v.status is JobStatus.RUNNING and v.progress >= 0.1, 180,
           "started")
    for node in nodes:  # PostgreSQL and Redis unreachable from every node
        node.partition()
    time.sleep(20)
    for node in nodes:
        node.heal()
    for job in jobs:
        c.wait(job, lambda v: v.status.terminal, 300, "ended")
        exactly_once(c, job)
    # Every node's recovery waited for the database to answer a heartbeat window before
    # judging anyone's heartbeat, so no live attempt was taken back.
    outcomes = c.rows("SELECT outcome, count(*) FROM attempts GROUP BY outcome")
    assert outcomes == [("COMPLETED", len(jobs))], (outcomes, c.log_text())
