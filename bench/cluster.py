"""Nodes on one machine (tests/cluster/netkit.py): throughput for 1, 2 and 3 nodes, and how
long a lost node's job takes to run elsewhere (issue 16; docs/scale-out.md).

Every node is a network namespace running one ``pitwall worker --slots 1`` in gVisor with
its own data dir, reaching the bench's own PostgreSQL, Redis and S3 server (the lake and
the artifacts are in the bucket) through its veth pair.

1. **Throughput**: ``--jobs`` jobs (the SMA example on 2 symbols x 1 week, audit off) are
   queued, then the workers of N nodes start; window = first worker start to the last
   job's commit. Printed: jobs/min, and the speed-up over 1 node beside the ideal on this
   machine, ``min(N, cores)`` (the nodes share its cores).
2. **Takeover**, ``--repeat`` times: a job (sleeping 20 s) runs on node 1, node 2 waits;
   node 1's link goes down; printed: the time from the cut to the job's second attempt
   starting on node 2, against the heartbeat window (goal: <= 2x).
3. **A node lost under load**: ``--lost-jobs`` jobs (default 200) over 3 nodes, node 3
   killed (SIGKILL) once half have ended; printed: jobs/min (first worker start to the
   last job's end) and the queue wait (queued to first attempt start) p50/p95/max.

Every job of every run must end COMPLETED exactly once (asserted).

    .venv/bin/python bench/cluster.py [--jobs 24] [--repeat 3] [--lost-jobs 200]  (as root)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster.clusterkit import (  # noqa: E402
    SMA,
    STALE_AFTER_S,
    Cluster,
    Fabric,
    on_node,
    open_cluster,
    run_losing_a_node,
    start_fabric,
)
from tests.orchestration.conftest import sleeper, spec  # noqa: E402
from tests.storage.s3_testserver import AWS_TEST_ENV  # noqa: E402

from pitwall.models import JobStatus  # noqa: E402


def done_once(c: Cluster, jobs: list[str]) -> None:
    for job in jobs:
        assert c.stack.store.get(job).status is JobStatus.COMPLETED, job
    counts = c.rows("SELECT count(*) FROM metrics")
    assert counts == [(len(jobs),)], counts


def run_dir(root: Path) -> Path:
    return root / f"run-{uuid.uuid4().hex[:8]}"


def throughput(fab: Fabric, root: Path, nodes: int, n_jobs: int) -> float:
    c = open_cluster(fab, run_dir(root))
    jobs = [c.stack.submit(spec(fast=5, slow=30), SMA, researcher="ada")
            for _ in range(n_jobs)]
    started = time.monotonic()
    for node in fab.nodes[:nodes]:
        c.worker(node)
    for job in jobs:
        c.wait(job, lambda v: v.status.terminal, 900, "ended")
    seconds = time.monotonic() - started
    done_once(c, jobs)
    fab.stop_nodes()
    c.stack.store.close()
    return n_jobs / seconds * 60


def takeover(fab: Fabric, root: Path) -> float:
    c = open_cluster(fab, run_dir(root))
    lost, other = fab.nodes[:2]
    job = c.submit(sleeper(20))
    c.worker(lost)
    c.wait(job, on_node(c, job, lost), 180, "ran on node1")
    c.worker(other)
    lost.partition()
    cut = dt.datetime.now(dt.UTC)
    c.wait(job, lambda v: v.status is JobStatus.COMPLETED, 240, "completed on node2")
    [(started,)] = c.rows("SELECT started_at FROM attempts WHERE job_id = :j AND attempt = 2",
                          j=job)
    lost.heal()
    time.sleep(25)  # the lost node's late result comes and is fenced
    done_once(c, [job])
    fab.stop_nodes()
    c.stack.store.close()
    return float((started - cut).total_seconds())


def losing_a_node(fab: Fabric, root: Path, n_jobs: int) -> str:
    c = open_cluster(fab, run_dir(root))
    run = run_losing_a_node(c, n_jobs)
    done_once(c, run.jobs)
    fab.stop_nodes()
    c.stack.store.close()
    return run.summary()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--jobs", type=int, default=24)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--lost-jobs", type=int, default=200)
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/cluster.py needs root (ip netns)", file=sys.stderr)
        return 2
    root = Path(f"/tmp/pitwall-bench-cluster-{os.getpid()}")
    root.mkdir(mode=0o755)
    os.environ.update(AWS_TEST_ENV)
    fab = start_fabric(root, 3)
    try:
        cores = os.cpu_count() or 1
        rates = {n: throughput(fab, root, n, args.jobs) for n in (1, 2, 3)}
        print(f"## throughput: {args.jobs} SMA jobs, 1 slot per node, {cores} cores shared")
        for n, rate in rates.items():
            ideal = min(n, cores)
            print(f"{n} node(s): {rate:6.1f} jobs/min   speed-up {rate / rates[1]:4.2f}x "
                  f"(ideal here {ideal}x: {rate / rates[1] / ideal:5.1%} of it)")
        times = [takeover(fab, root) for _ in range(args.repeat)]
        print(f"## takeover of a partitioned node's job, heartbeat window {STALE_AFTER_S} s")
        print("cut -> second attempt started: " + ", ".join(f"{t:.1f} s" for t in times)
              + f"   worst {max(times) / STALE_AFTER_S:.2f}x the window (goal <= 2x); "
              "every job completed exactly once")
        print("## a node lost under load, 3 nodes")
        print(losing_a_node(fab, root, args.lost_jobs) + "; every job completed exactly once")
    finally:
        fab.close()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
