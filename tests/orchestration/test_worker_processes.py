"""Acceptance of issue 6 with real ``pitwall worker`` processes, PostgreSQL, Redis, gVisor."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

from conftest import Cluster, RedisServer, running, sleeper
from pitwall.models import JobStatus
from pitwall_executor.jobs.redis_queue import RedisQueue

Make = Callable[..., Cluster]
FAST = ("--slots", "1", "--grace", "5")


def _one_completion(c: Cluster, job: str) -> None:
    """Exactly one metrics row and one set of artifact rows, from the completing attempt."""
    view = c.stack.store.get(job)
    assert c.rows("SELECT attempt FROM metrics WHERE job_id = :j", j=job) == [(view.attempt,)]
    names = sorted(str(r[0]) for r in c.rows("SELECT name FROM artifacts WHERE job_id = :j",
                                              j=job))
    on_disk = sorted(p.name for p in (c.config.artifacts_dir / job / f"attempt-{view.attempt}")
                     .iterdir())
    assert {"metrics.json", "report.html", "log.txt"} <= set(names) and names == on_disk
    uris = c.rows("SELECT uri FROM artifacts WHERE job_id = :j", j=job)
    assert all(f"/attempt-{view.attempt}/" in str(u[0]) for u in uris)
    outcomes = [r[0] for r in c.rows("SELECT outcome FROM attempts WHERE job_id = :j", j=job)]
    assert outcomes.count("COMPLETED") == 1


def _kill_holder(c: Cluster, job: str) -> None:
    """SIGKILL the worker process running the job's current attempt (named host:pid:slot)."""
    attempt = c.stack.store.get(job).attempt
    [(worker,)] = c.rows("SELECT worker FROM attempts WHERE job_id = :j AND attempt = :a",
                         j=job, a=attempt)
    pid = int(str(worker).split(":")[1])
    [proc] = [p for p in c.procs if p.pid == pid]
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_mid_job_another_worker_completes_it(make_cluster: Make) -> None:
    c = make_cluster()
    c.worker(*FAST)
    c.worker(*FAST)
    job = c.submit(sleeper(4))
    c.wait(job, running, timeout=120)
    _kill_holder(c, job)
    view = c.wait_done(job, timeout=120)
    assert view.status is JobStatus.COMPLETED, view.reason
    assert view.attempt == 2
    outcomes = c.rows("SELECT attempt, outcome FROM attempts WHERE job_id = :j ORDER BY attempt",
                      j=job)
    assert outcomes == [(1, "LOST"), (2, "COMPLETED")]
    _one_completion(c, job)


def test_poison_job_fails_after_max_attempts_with_the_reason(make_cluster: Make) -> None:
    c = make_cluster()
    c.worker("--slots", "0")  # recovery only: it outlives the workers the job kills
    c.worker(*FAST, "--no-recovery")
    job = c.submit(sleeper(60))
    for attempt in (1, 2, 3):
        c.worker(*FAST, "--no-recovery")  # the next victim, ready before this one dies
        c.wait(job, lambda v, a=attempt: running(v) and v.attempt == a, timeout=120)
        _kill_holder(c, job)  # what an OOM kill of the worker looks like
    view = c.wait_done(job, timeout=60)
    assert view.status is JobStatus.FAILED
    assert view.reason is not None and view.reason.startswith("worker died 3 times")
    assert c.rows("SELECT count(*) FROM metrics WHERE job_id = :j", j=job) == [(0,)]


def test_sigterm_finishes_within_grace_or_hands_the_job_back(make_cluster: Make) -> None:
    c = make_cluster()
    short = c.submit(sleeper(2))
    assert isinstance(c.stack.queue, RedisQueue)
    events = c.stack.queue.client.pubsub()
    events.subscribe(f"pitwall:events:{short}")
    proc = c.worker("--slots", "1", "--grace", "60", "--no-recovery")
    c.wait(short, running, timeout=120)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0
    view = c.stack.store.get(short)
    assert view.status is JobStatus.COMPLETED and view.attempt == 1, view.reason
    published = [json.loads(m["data"]) for m in iter(lambda: events.get_message(timeout=1), None)
                 if m["type"] == "message"]
    events.close()
    stored = [e.model_dump(mode="json") for e in c.stack.store.events(short)]
    assert published == stored  # every event, in order, live on Redis as in the DB
    assert [e["status"] for e in published if e["kind"] == "status"] == [
        "PENDING", "RUNNING", "COMPLETED"]

    long = c.submit(sleeper(60))
    proc = c.worker("--slots", "1", "--grace", "1", "--no-recovery")
    c.wait(long, running, timeout=120)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    view = c.stack.store.get(long)
    assert view.status is JobStatus.PENDING and view.attempt == 1
    assert c.rows("SELECT outcome FROM attempts WHERE job_id = :j", j=long) == [("HANDED_BACK",)]
    assert c.rows("SELECT recovered FROM jobs WHERE id = :j", j=long) == [(1,)]
    assert c.stack.queue.queued_ids() == [long]  # back in the queue, ready for another worker
    assert c.stack.store.cancel(long) is JobStatus.CANCELLED


def test_redis_restart_with_data_loss_every_job_ends_once(make_cluster: Make,
                                                          redis_server: RedisServer) -> None:
    c = make_cluster()
    jobs = [c.submit(sleeper(3)) for _ in range(4)]
    c.worker(*FAST)
    c.worker(*FAST)
    deadline = time.monotonic() + 60
    while sum(running(c.stack.store.get(j)) for j in jobs) < 2:
        assert time.monotonic() < deadline, c.log_tail()
        time.sleep(0.1)
    before = redis_server.run_id()
    redis_server.restart()  # the queue, the pending lists and the groups are gone
    # A new process with persistence off: its data is gone. (Counting keys here would race the
    # workers, which reconnect and recreate their consumer group within milliseconds.)
    assert redis_server.run_id() != before
    for job in jobs:
        view = c.wait_done(job, timeout=90)
        assert view.status is JobStatus.COMPLETED, view.reason
        _one_completion(c, job)
