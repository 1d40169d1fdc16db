from __future__ import annotations

import threading
import time

from pitwall_executor.jobs.queue import MemoryQueue


def test_priority_then_fifo() -> None:
    q = MemoryQueue()
    q.enqueue("sweep-1", priority=5)
    q.enqueue("a")
    q.enqueue("b")
    order = [c.job_id for c in (q.claim("w", timeout=0) for _ in range(3)) if c]
    assert order == ["a", "b", "sweep-1"]
    assert q.claim("w", timeout=0.01) is None


def test_claim_waits_for_an_enqueue() -> None:
    q = MemoryQueue()
    threading.Timer(0.05, q.enqueue, args=("late",)).start()
    started = time.monotonic()
    claim = q.claim("w", timeout=2.0)
    assert claim is not None and claim.job_id == "late"
    assert time.monotonic() - started < 1.0


def test_a_silent_claim_is_redelivered_and_a_heartbeat_keeps_it() -> None:
    q = MemoryQueue()
    q.enqueue("j1")
    q.enqueue("j2")
    c1 = q.claim("dead", timeout=0)
    c2 = q.claim("alive", timeout=0)
    assert c1 is not None and c2 is not None
    time.sleep(0.05)
    q.heartbeat(c2)
    assert q.requeue_stale(older_than=0.03) == ["j1"]
    again = q.claim("other", timeout=0)
    assert again is not None and again.job_id == "j1" and again.deliveries == 2
    q.ack(again)
    q.ack(c2)
    assert q.requeue_stale(older_than=0.0) == [] and len(q) == 0
