"""Redis losing its data (a restart without persistence, FLUSHDB) under a RedisQueue: the
blocked reads, heartbeats, acks and releases of the claims it held go on without an
error, the group is recreated and the queue's listeners are told (to reconcile).

The keys of one unique prefix are deleted, which is what FLUSHDB does to them, so the
shared Redis of the other tests is left alone.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from pitwall_executor.jobs.queue import GONE, HELD, TAKEN, Claim
from pitwall_executor.jobs.redis_queue import HIGH, RedisQueue

REDIS_URL = os.environ.get("PITWALL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def rq() -> Iterator[RedisQueue]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); "
                    "run `make services` (scripts/services.sh) to start it")
    q = RedisQueue(client, prefix=f"pwloss-{uuid.uuid4().hex[:12]}")
    yield q
    _lose_data(q)
    client.close()


def _lose_data(q: RedisQueue) -> None:
    keys = list(q.client.scan_iter(match=f"{q.prefix}:*"))
    if keys:
        q.client.delete(*keys)


def test_a_blocked_claim_survives_the_loss_and_the_queue_says_so(rq: RedisQueue) -> None:
    resets: list[int] = []
    rq.on_reset.append(lambda: resets.append(1))
    rq.enqueue("held")
    held = rq.claim("w1", timeout=0)
    assert held is not None and rq.heartbeat(held) == HELD
    resets.clear()
    got: list[Claim | BaseException | None] = []

    def blocked() -> None:
        try:
            got.append(rq.claim("w2", timeout=5))
        except BaseException as exc:
            got.append(exc)

    reader = threading.Thread(target=blocked)
    reader.start()
    time.sleep(0.3)  # w2 waits in XREADGROUP on the empty streams
    _lose_data(rq)
    reader.join(10)
    assert got == [None]  # UNBLOCKED: no error, the caller simply claims again
    assert resets  # the recovery loop is woken to reconcile
    # The claim w1 still holds went with the data: said, not mistaken for a hand-over.
    assert rq.heartbeat(held) == GONE
    rq.ack(held)  # nothing to ack: no error
    rq.enqueue("after")
    again = rq.claim("w2", timeout=1)
    assert again is not None and again.job_id == "after" and rq.heartbeat(again) == HELD


def test_a_claim_moved_by_the_reaper_is_taken_not_gone(rq: RedisQueue) -> None:
    rq.enqueue("slow")
    claim = rq.claim("silent", timeout=0)
    assert claim is not None
    time.sleep(0.03)
    assert rq.requeue_stale(older_than=0.01) == ["slow"]
    assert rq.heartbeat(claim) == TAKEN


def test_releasing_a_lost_claim_queues_the_job_again(rq: RedisQueue) -> None:
    rq.enqueue("at-quota")
    claim = rq.claim("w", timeout=0)
    assert claim is not None
    _lose_data(rq)
    rq.release(claim)  # e.g. its researcher was at quota: it must not vanish
    assert rq.queued_ids() == ["at-quota"]
    assert rq.client.xlen(rq.key(HIGH)) == 1
