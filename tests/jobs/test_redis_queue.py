"""RedisQueue against a real Redis, and the JobQueue contract on both queues.

Each test gets its own key prefix and deletes its keys afterwards. A missing Redis is a
failure that says how to start it, never a skip.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from pitwall_executor.jobs.queue import Claim, JobQueue, MemoryQueue
from pitwall_executor.jobs.redis_queue import GROUP, HIGH, LANES, LOW, RedisQueue, make_queue

REDIS_URL = os.environ.get("PITWALL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def rq() -> Iterator[RedisQueue]:
    """A RedisQueue under a unique prefix; its keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); "
                    "run `make services` (scripts/services.sh) to start it")
    q = RedisQueue(client, prefix=f"pwtest-{uuid.uuid4().hex[:12]}")
    try:
        yield q
    finally:
        keys = list(client.scan_iter(match=f"{q.prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def queue(request: pytest.FixtureRequest) -> JobQueue:
    """Each contract test runs on both queues the platform ships."""
    if request.param == "memory":
        return MemoryQueue()
    q: RedisQueue = request.getfixturevalue("rq")
    return q


def _pending(q: RedisQueue) -> int:
    total = 0
    for lane in LANES:
        if q.client.exists(q.key(lane)):
            total += int(q.client.xpending(q.key(lane), GROUP)["pending"])
    return total


def _stream_len(q: RedisQueue) -> int:
    return sum(int(q.client.xlen(q.key(lane))) for lane in LANES)


# -- the contract, on both queues -------------------------------------------------------


def test_priority_then_fifo(queue: JobQueue) -> None:
    queue.enqueue("sweep-1", priority=3)
    queue.enqueue("a")
    queue.enqueue("sweep-2", priority=3)
    queue.enqueue("b")
    claims = [queue.claim("w", timeout=0) for _ in range(4)]
    assert [c.job_id for c in claims if c] == ["a", "b", "sweep-1", "sweep-2"]
    assert all(c is not None and c.deliveries == 1 for c in claims)
    assert queue.claim("w", timeout=0.05) is None


def test_claim_blocks_until_an_enqueue_from_another_thread(queue: JobQueue) -> None:
    timer = threading.Timer(0.2, queue.enqueue, args=("late",))
    started = time.monotonic()
    timer.start()
    claim = queue.claim("w", timeout=3.0)
    waited = time.monotonic() - started
    timer.join()
    assert claim is not None and claim.job_id == "late"
    assert 0.15 <= waited < 1.5, f"claim returned after {waited:.3f}s"


def test_claim_gives_up_after_its_timeout(queue: JobQueue) -> None:
    started = time.monotonic()
    assert queue.claim("w", timeout=0.2) is None
    assert 0.15 <= time.monotonic() - started < 1.5


def test_a_silent_claim_is_redelivered_and_a_heartbeat_keeps_it(queue: JobQueue) -> None:
    queue.enqueue("j-dead")
    queue.enqueue("j-alive")
    dead = queue.claim("dead", timeout=0)
    alive = queue.claim("alive", timeout=0)
    assert dead is not None and alive is not None
    assert (dead.job_id, alive.job_id) == ("j-dead", "j-alive")
    for _ in range(8):  # 0.4 s in all, twice `older_than`: only heartbeats keep it fresh
        time.sleep(0.05)
        queue.heartbeat(alive)
    assert queue.requeue_stale(older_than=0.2) == ["j-dead"]
    queue.ack(dead)  # the zombie finishes late: it must not drop the redelivered job
    queue.heartbeat(dead)
    again = queue.claim("other", timeout=0)
    assert again is not None and again.job_id == "j-dead" and again.deliveries == 2
    assert queue.claim("other", timeout=0) is None  # j-alive was not handed out again
    queue.ack(again)
    queue.ack(alive)
    assert queue.requeue_stale(older_than=0.0) == []
    assert queue.claim("other", timeout=0) is None


def test_concurrent_claims_deliver_each_job_exactly_once(queue: JobQueue) -> None:
    jobs = [f"job-{i:03d}" for i in range(200)]
    seen: list[str] = []
    lock = threading.Lock()
    produced = threading.Event()

    def produce() -> None:
        for i, job in enumerate(jobs):
            queue.enqueue(job, priority=i % 3)
        produced.set()

    def consume(name: str) -> None:
        while True:
            claim = queue.claim(name, timeout=0.2)
            if claim is None:
                if produced.is_set():
                    return
                continue
            with lock:
                seen.append(claim.job_id)
            queue.ack(claim)

    threads = [threading.Thread(target=consume, args=(f"w{i}",)) for i in range(4)]
    threads.append(threading.Thread(target=produce))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert not any(t.is_alive() for t in threads), "a claimer hung"
    counts = collections.Counter(seen)
    assert sorted(counts) == jobs
    assert max(counts.values()) == 1, counts.most_common(3)
    assert queue.requeue_stale(older_than=0.0) == []


def test_racing_reapers_redeliver_a_stale_job_once(queue: JobQueue) -> None:
    for i in range(50):
        queue.enqueue(f"j{i}", priority=i % 2)
    claims = [queue.claim("dead", timeout=0) for _ in range(50)]
    assert all(claims)
    time.sleep(0.05)
    start = threading.Barrier(2)
    results: list[list[str]] = [[], []]

    def reap(slot: int) -> None:
        start.wait()
        results[slot] = queue.requeue_stale(older_than=0.01)

    reapers = [threading.Thread(target=reap, args=(i,)) for i in range(2)]
    for t in reapers:
        t.start()
    for t in reapers:
        t.join(timeout=10)
    reaped = results[0] + results[1]
    assert sorted(reaped) == sorted(f"j{i}" for i in range(50))
    redelivered = _drain(queue)
    assert sorted(c.job_id for c in redelivered) == sorted(reaped)
    assert {c.deliveries for c in redelivered} == {2}


def _drain(queue: JobQueue) -> list[Claim]:
    out: list[Claim] = []
    while (claim := queue.claim("drain", timeout=0)) is not None:
        out.append(claim)
        queue.ack(claim)
    return out


# -- Redis specifics --------------------------------------------------------------------

redis_only = pytest.mark.redis


@redis_only
def test_ack_removes_the_entry_from_the_stream_and_the_pending_list(rq: RedisQueue) -> None:
    rq.enqueue("j1")
    rq.enqueue("j2", priority=1)
    first = rq.claim("w", timeout=0)
    second = rq.claim("w", timeout=0)
    assert first is not None and second is not None
    assert _stream_len(rq) == 2 and _pending(rq) == 2
    rq.ack(first)
    assert rq.client.xlen(rq.key(HIGH)) == 0 and _pending(rq) == 1
    rq.ack(second)
    assert _stream_len(rq) == 0 and _pending(rq) == 0
    assert all(k.startswith(f"{rq.prefix}:") for k in rq.client.scan_iter(f"{rq.prefix}*"))


@redis_only
def test_a_requeued_entry_replaces_the_old_one_in_its_own_stream(
    rq: RedisQueue, caplog: pytest.LogCaptureFixture,
) -> None:
    rq.enqueue("sweep", priority=2)
    claim = rq.claim("dead", timeout=0)
    assert claim is not None
    rq.heartbeat(claim)
    assert not caplog.records  # still held: no warning
    time.sleep(0.03)
    assert rq.requeue_stale(older_than=0.01) == ["sweep"]
    assert rq.client.xlen(rq.key(LOW)) == 1 and rq.client.xlen(rq.key(HIGH)) == 0
    assert _pending(rq) == 0
    entries: Any = rq.client.xrange(rq.key(LOW))
    (entry_id, fields), = entries
    assert fields == {"job_id": "sweep", "deliveries": "1"}
    assert entry_id != claim.token.split(":")[1]
    rq.heartbeat(claim)  # the zombie notices, and takes nothing back
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "already handed to another worker" in caplog.records[0].getMessage()
    assert _pending(rq) == 0


@redis_only
def test_a_high_job_read_alongside_a_low_one_wins_and_the_low_one_is_kept(
    rq: RedisQueue,
) -> None:
    # The race of claim's blocking read: both streams fill between the non-blocking
    # reads and the blocking one, and Redis answers with one entry of each.
    real_read = rq._read
    calls: list[int] = []

    def read_after_both_arrive(
        worker: str, lanes: tuple[str, ...], block_ms: int | None,
    ) -> list[tuple[str, str, dict[str, str]]]:
        calls.append(len(lanes))
        if len(lanes) == 2:
            rq.enqueue("low", priority=1)
            rq.enqueue("high")
        return real_read(worker, lanes, block_ms)

    rq._read = read_after_both_arrive  # type: ignore[method-assign]
    claim = rq.claim("w", timeout=1.0)
    rq._read = real_read  # type: ignore[method-assign]
    assert calls == [1, 1, 2]
    assert claim is not None and claim.job_id == "high"
    assert _pending(rq) == 1  # the low entry is no longer held by "w"
    low = rq.claim("other", timeout=0)
    assert low is not None and low.job_id == "low" and low.deliveries == 1


@redis_only
def test_idle_consumers_with_nothing_pending_are_forgotten(rq: RedisQueue) -> None:
    rq.enqueue("j")
    claim = rq.claim("gone-worker", timeout=0)
    assert claim is not None
    rq.claim("busy-worker", timeout=0)  # nothing to claim: registers, holds nothing
    rq.enqueue("k")
    held = rq.claim("busy-worker", timeout=0)
    assert held is not None
    rq.ack(claim)
    time.sleep(0.05)
    rq.consumer_ttl_s = 0.02
    assert rq.requeue_stale(older_than=60) == []
    names = {c["name"] for c in rq.client.xinfo_consumers(rq.key(HIGH), GROUP)}
    assert "gone-worker" not in names and "busy-worker" in names


@redis_only
def test_the_group_is_recreated_when_the_streams_vanish(rq: RedisQueue) -> None:
    rq.enqueue("before")
    assert rq.requeue_stale(older_than=0) == []  # creates the group from id 0
    rq.client.delete(*(rq.key(lane) for lane in LANES))
    rq.enqueue("after")
    claim = rq.claim("w", timeout=0)
    assert claim is not None and claim.job_id == "after"


def test_make_queue_dispatches_on_the_scheme() -> None:
    assert isinstance(make_queue("memory://"), MemoryQueue)
    plain = make_queue(REDIS_URL)
    assert isinstance(plain, RedisQueue) and plain.prefix == "pitwall"
    assert plain.client.connection_pool.connection_class is redis.Connection
    tls = make_queue("rediss://cache.internal:6380/2")
    assert isinstance(tls, RedisQueue)
    assert tls.client.connection_pool.connection_class is redis.SSLConnection
    for bad in ("amqp://broker/", "postgresql://db/pitwall", "memory:", ""):
        with pytest.raises(ValueError, match=r"memory:// .* redis://host:port/db"):
            make_queue(bad)


def test_a_prefix_that_could_match_other_keys_is_refused() -> None:
    for bad in ("", "pit wall", "pit*", "{pitwall}"):
        with pytest.raises(ValueError, match="prefix"):
            RedisQueue.from_url(REDIS_URL, prefix=bad)
