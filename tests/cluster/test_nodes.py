"""Nodes on one machine, with real network partitions (issue 16): each node a network
namespace running ``pitwall worker`` in gVisor and reading the lake from S3 through its
link; a job taken from a lost node completes exactly once on another, and the lost node's
late result is fenced; a cold node fills its own cache; many jobs survive a lost node; the
API runs in a namespace of its own."""

from __future__ import annotations

import datetime as dt
import signal
import time

import httpx
import pytest

# The harness's fixtures come from a module, not a conftest.py: the orchestration tests
# import their own conftest by the bare name ``conftest``, which a second conftest.py
# loaded after theirs would take over.
from tests.cluster.clusterkit import (  # noqa: F401  (fixtures, used by name)
    SMA,
    STALE_AFTER_S,
    Cluster,
    cluster_fixture,
    fabric_fixture,
    on_node,
    run_losing_a_node,
)
from tests.cluster.netkit import Node
from tests.orchestration.conftest import sleeper, spec

from pitwall.models import JobStatus
from pitwall.notebook.client import Client
from pitwall_executor.datalake.cache import FileCache
from pitwall_executor.jobs.researchers import create_researcher

#: What a node reads of the lake's data files (not its catalog) through its S3 proxy.
LAKE_DATA = "/lake/sample/data/"

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
    for node in nodes:  # PostgreSQL, Redis and S3 unreachable from every node
        node.partition()
    time.sleep(20)
    for node in nodes:
        node.heal()
    for job in jobs:
        c.wait(job, lambda v: v.status.terminal, 300, "ended")
        exactly_once(c, job)
    # Every node's recovery waited for the database to answer a heartbeat window before
    # judging anyone's heartbeat, so no live attempt was taken back (none LOST). S3 is cut
    # too: a job that read its data in the window ends its attempt INFRA_FAILED and runs
    # again (the outage retry), which is the only other outcome allowed.
    outcomes = dict(c.rows("SELECT outcome, count(*) FROM attempts GROUP BY outcome"))
    assert outcomes.pop("COMPLETED") == len(jobs), (outcomes, c.log_text())
    assert set(outcomes) <= {"INFRA_FAILED"}, (outcomes, c.log_text())


def test_a_cold_node_reads_its_first_job_from_s3_and_its_second_from_its_cache(
        cluster: Cluster) -> None:
    c = cluster
    warm, cold = c.fabric.nodes[:2]
    first = c.stack.submit(spec(fast=5, slow=30), SMA, researcher="ada")
    c.worker(warm)
    done = c.wait(first, lambda v: v.status.terminal, 180, "ended on the warm node")
    assert done.status is JobStatus.COMPLETED, done.reason
    assert c.fabric.s3.seen(warm).gets(LAKE_DATA), "the warm node never read the lake"
    warm.kill()  # the cold node joins alone: it has read nothing yet
    assert c.fabric.s3.seen(cold).gets(LAKE_DATA) == []
    c.worker(cold)
    cache = FileCache(cold.data_dir / "cache", 1 << 30)

    second = c.stack.submit(spec(fast=5, slow=30), SMA, researcher="ada")
    view = c.wait(second, lambda v: v.status.terminal, 180, "ended on the cold node")
    assert view.status is JobStatus.COMPLETED, view.reason
    assert c.attempts(second) == [(1, cold.hostname, "COMPLETED")]
    fetched = len(c.fabric.s3.seen(cold).gets(LAKE_DATA))
    assert fetched >= 1
    assert (cache.metrics()["misses"], cache.metrics()["hits"]) == (fetched, 0)

    third = c.stack.submit(spec(fast=5, slow=30), SMA, researcher="ada")
    again = c.wait(third, lambda v: v.status.terminal, 180, "ended on the cold node again")
    assert again.status is JobStatus.COMPLETED, again.reason
    assert len(c.fabric.s3.seen(cold).gets(LAKE_DATA)) == fetched  # nothing fetched again
    assert (cache.metrics()["misses"], cache.metrics()["hits"]) == (fetched, fetched)
    assert again.metrics == view.metrics == done.metrics  # the same bytes on every node


def test_200_jobs_over_3_nodes_one_lost_halfway_each_end_exactly_once(
        cluster: Cluster) -> None:
    c = cluster
    run = run_losing_a_node(c, 200)
    print(run.summary())  # the figures: shown with -s and in bench/cluster.py
    for job in run.jobs:
        exactly_once(c, job)
    assert c.rows("SELECT count(*) FROM metrics") == [(200,)]
    # Exactly one COMPLETED attempt per job; only the lost node lost anything (one job at
    # most: it ran one slot), and it started nothing once it was gone.
    assert c.rows("SELECT count(*) FROM attempts WHERE outcome = 'COMPLETED'") == [(200,)]
    lost = c.rows("SELECT host FROM attempts WHERE outcome = 'LOST'")
    assert lost in ([], [(run.lost.hostname,)]), lost
    assert c.rows("SELECT count(*) FROM attempts WHERE host = :h AND started_at > :t",
                  h=run.lost.hostname, t=run.lost_at) == [(0,)]
    by_host = dict(c.rows("SELECT host, count(*) FROM attempts WHERE outcome = 'COMPLETED' "
                          "GROUP BY host"))
    assert set(by_host) == {n.hostname for n in c.fabric.nodes}, by_host
    assert len(run.queue_wait_s) == 200 and run.jobs_per_min > 0


def test_the_api_in_its_own_namespace_serves_runs_and_its_outage_disturbs_no_job(
        cluster: Cluster) -> None:
    c = cluster
    token = create_researcher(c.stack.store, "grace")
    url = c.api()
    c.worker(c.fabric.nodes[0])
    with Client(url, token, timeout=5) as client:
        job = client.submit(sleeper(8), spec())
        c.wait(job, on_node(c, job, c.fabric.nodes[0]), 180, "started")
        c.fabric.api.partition()  # clients lose the API; the node and its job do not
        with pytest.raises(httpx.TransportError):
            client.get(job)
        view = c.wait(job, lambda v: v.status.terminal, 180, "ended with the API cut off")
        assert view.status is JobStatus.COMPLETED, view.reason
        c.fabric.api.heal()
        seen = client.wait(job, timeout=60)
        assert seen.status is JobStatus.COMPLETED and seen.metrics == view.metrics
        # The API node reads the artifacts from the bucket through its own link.
        before = len(c.fabric.s3.seen(c.fabric.api).gets("/artifacts-"))
        equity = client.equity(job)
        assert view.metrics is not None and equity.height == view.metrics.n_bars
        assert len(c.fabric.s3.seen(c.fabric.api).gets("/artifacts-")) > before
