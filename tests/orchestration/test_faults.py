"""The fault suite: real ``pitwall worker`` processes, a private Redis, PostgreSQL and gVisor.

Each fault ends with every job terminal exactly once (one metrics row per completed job),
the same worker processes running jobs again without a restart, healthy, and no process
or job file left behind (issue 14, docs/architecture.md §1.5).
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from collections.abc import Callable

import pytest
import redis
from faultkit import (
    each_ended_once,
    health,
    leftovers,
    runs_jobs_again,
    start_api,
    start_workers,
    stop_workers,
    submit_quiet,
)
from tests.pgkit import OwnPostgres

from conftest import Cluster, RedisServer, running, sleeper, spec
from pitwall.models import JobStatus, JobView
from pitwall.notebook.client import Client
from pitwall_executor.jobs.researchers import create_researcher
from pitwall_executor.stack import Stack

pytestmark = pytest.mark.sandbox
Make = Callable[..., Cluster]


def _lost_entries(c: Cluster, n: int) -> list[str]:
    """Jobs PENDING in the database that the queue does not hold (as after a flush)."""
    offline = Stack.from_config(c.config.model_copy(update={"queue_url": "memory://"}))
    try:
        return [offline.submit(spec(), sleeper(0),
                               researcher="ada") for _ in range(n)]
    finally:
        offline.store.close()


def _wait_running(c: Cluster, jobs: list[str], n: int) -> list[str]:
    deadline = time.monotonic() + 90
    while len(now := [j for j in jobs if running(c.stack.store.get(j))]) < n:
        assert time.monotonic() < deadline, c.log_tail()
        time.sleep(0.1)
    return now


def _quiet_logs(c: Cluster) -> None:
    """No noise: nothing crashed, and nobody claims a job was handed to another worker."""
    logs = c.log_text()
    for noise in ("Traceback", "handed to another worker", "crashed the worker path"):
        assert noise not in logs, logs[-4000:]


def _finish(c: Cluster, ports: list[int], jobs: list[str]) -> None:
    each_ended_once(c, jobs)
    runs_jobs_again(c, ports)
    stop_workers(c)
    assert leftovers(c.config.data_dir) == []


def test_redis_flushdb_with_idle_workers(make_cluster: Make, redis_server: RedisServer) -> None:
    c = make_cluster()
    ports = start_workers(c, 2)
    warm = c.submit(sleeper(0))
    assert c.wait_done(warm).status is JobStatus.COMPLETED
    time.sleep(1.0)  # both slots are blocked reading the stream
    redis.Redis.from_url(redis_server.url).flushdb()  # the streams and the group are gone
    lost = _lost_entries(c, 2)  # PENDING in the database, unknown to the queue
    fresh = [c.submit(sleeper(0)) for _ in range(2)]
    for job in lost + fresh:
        assert c.wait_done(job, timeout=90).status is JobStatus.COMPLETED
    assert all(c.stack.store.get(j).attempt == 1 for j in lost + fresh)
    _quiet_logs(c)
    _finish(c, ports, [warm, *lost, *fresh])


def test_redis_flushdb_with_busy_workers(make_cluster: Make, redis_server: RedisServer) -> None:
    c = make_cluster()
    ports = start_workers(c, 2)
    jobs = [submit_quiet(c, 4) for _ in range(5)]
    _wait_running(c, jobs, 2)
    # Two claims in flight and three entries queued: all gone with the data.
    redis.Redis.from_url(redis_server.url).flushdb()
    for job in jobs:
        view = c.wait_done(job, timeout=120)
        assert view.status is JobStatus.COMPLETED, view.reason
    # The two running jobs finished on their first attempt: nothing was taken from them.
    assert [c.stack.store.get(j).attempt for j in jobs] == [1] * 5
    _quiet_logs(c)
    # Each busy worker says once that its claim went with the data, not every second.
    assert 1 <= c.log_text().count("the queue lost the claim") <= 2
    _finish(c, ports, jobs)


def test_postgres_stopped_20s_with_jobs_running_and_clients_polling(
        make_cluster: Make, own_pg: OwnPostgres) -> None:
    c = make_cluster(db_url=own_pg.url)
    token = create_researcher(c.stack.store, "ada")
    url = start_api(c)
    ports = start_workers(c, 2)
    jobs = [submit_quiet(c, 6) for _ in range(4)]
    views: dict[str, JobView] = {}
    errors: list[BaseException] = []

    def poll(job: str) -> None:  # a researcher's notebook: Client.wait rides out the 503s
        try:
            with Client(url, token) as client:
                views[job] = client.wait(job, timeout=240, poll=0.5, retry_for=120)
        except BaseException as exc:
            errors.append(exc)

    pollers = [threading.Thread(target=poll, args=(j,)) for j in jobs]
    for t in pollers:
        t.start()
    busy = _wait_running(c, jobs, 2)
    own_pg.stop()  # the two running jobs end during the outage
    time.sleep(20)
    own_pg.start()
    back = dt.datetime.now(dt.UTC)
    for t in pollers:
        t.join(timeout=240)
    assert not errors, errors
    assert {j: v.status for j, v in views.items()} == dict.fromkeys(jobs, JobStatus.COMPLETED)
    # Results finished during the outage were committed on its return by the attempt that
    # ran them; progress writes meanwhile were skipped; nothing was taken back or rerun.
    for job in jobs:
        assert c.stack.store.attempt_outcomes(job) == ["COMPLETED"], job
    for job in busy:
        finished = c.stack.store.get(job).finished_at
        assert finished is not None and finished >= back - dt.timedelta(seconds=1)
    # The queued jobs started soon after the database returned (goal: 5 s; a 2-CPU VM).
    for job in set(jobs) - set(busy):
        started = c.stack.store.get(job).started_at
        assert started is not None and started - back < dt.timedelta(seconds=10), started
    logs = c.log_text()
    for noise in ("crashed the worker path", "internal error", "taken back", "Traceback"):
        assert noise not in logs, logs[-4000:]
    assert "progress not recorded" in logs  # skipped, not fatal
    _finish(c, ports, jobs)


def test_a_loop_that_cannot_recover_ends_the_process_for_its_supervisor(
        make_cluster: Make, redis_server: RedisServer) -> None:
    c = make_cluster()
    [port] = start_workers(c, 1, "--give-up-after", "4")
    redis_server.kill()  # and it stays down
    deadline = time.monotonic() + 15
    while health(port)[1]["loops"]["slot-0"]["state"] != "retrying":
        assert time.monotonic() < deadline, c.log_tail()
        time.sleep(0.2)
    status, body = health(port)
    assert status == 200 and body["loops"]["slot-0"]["failures"] >= 1  # still trying
    [proc] = c.procs
    assert proc.wait(timeout=60) == 1  # not left half alive: its supervisor restarts it
    assert "giving up so that the process is restarted" in c.log_text()
    assert leftovers(c.config.data_dir) == []


def test_a_resumed_worker_drops_its_taken_back_attempt_quietly(make_cluster: Make) -> None:
    c = make_cluster()
    ports = start_workers(c, 2)
    job = submit_quiet(c, 12)
    _wait_running(c, [job], 1)
    [(worker,)] = c.rows("SELECT worker FROM attempts WHERE job_id = :j", j=job)
    [holder] = [p for p in c.procs if p.pid == int(str(worker).split(":")[1])]
    holder.send_signal(signal.SIGSTOP)  # alive but silent: its heartbeat goes stale
    c.wait(job, lambda v: v.attempt == 2 and v.status is JobStatus.RUNNING, timeout=60)
    holder.send_signal(signal.SIGCONT)  # it wakes up to find its attempt taken back
    assert c.wait_done(job, timeout=120).status is JobStatus.COMPLETED
    assert c.stack.store.attempt_outcomes(job) == ["LOST", "COMPLETED"]
    [port] = [p for p, proc in zip(ports, c.procs, strict=True) if proc is holder]
    deadline = time.monotonic() + 30
    while "dropped: attempt 1 was taken back" not in (log := c.log_text()):
        assert time.monotonic() < deadline, log[-4000:]
        time.sleep(0.2)
    assert "crashed the worker path" not in log and "internal error" not in log
    assert health(port)[0] == 200
    _finish(c, ports, [job])
