"""Job queues: the in-process queue of the embedded mode.

The contract (docs/architecture.md §4) is at-least-once: a claimed job stays owned by its worker
until ``ack``; a claim whose worker stopped heartbeating is handed out again by
``requeue_stale``. The database stays the source of truth: a redelivered job whose row
is no longer PENDING is simply acknowledged by the worker.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

# What a claim's heartbeat found: the worker still holds it; another consumer was handed
# it (this one was thought dead); or the queue no longer has it (Redis lost its data).
# Whatever the answer, the database's attempt decides whether the job is still this
# worker's; the queue's answer only says whether heartbeating the claim is still useful.
HELD = "held"
TAKEN = "taken"
GONE = "gone"


@dataclass(frozen=True)
class Claim:
    """A job handed to one worker."""

    job_id: str
    token: str
    deliveries: int


class JobQueue(Protocol):
    def enqueue(self, job_id: str, *, priority: int = 0) -> None: ...
    def claim(self, worker: str, *, timeout: float) -> Claim | None: ...
    def heartbeat(self, claim: Claim) -> str: ...
    def ack(self, claim: Claim) -> None: ...
    def requeue_stale(self, *, older_than: float) -> list[str]: ...
    def release(self, claim: Claim) -> None: ...
    def queued_ids(self) -> list[str]: ...


@dataclass
class _Lease:
    job_id: str
    worker: str
    deliveries: int
    priority: int
    beat: float = field(default_factory=time.monotonic)


class MemoryQueue:
    """A priority queue in this process (lower ``priority`` first, then FIFO)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str, int]] = []
        self._seq = itertools.count()
        self._leases: dict[str, _Lease] = {}
        self._cond = threading.Condition()

    def enqueue(self, job_id: str, *, priority: int = 0) -> None:
        self._push(job_id, priority, 0)

    def _push(self, job_id: str, priority: int, deliveries: int) -> None:
        with self._cond:
            heapq.heappush(self._heap, (priority, next(self._seq), job_id, deliveries))
            self._cond.notify()

    def claim(self, worker: str, *, timeout: float) -> Claim | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._heap:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            prio, seq, job_id, deliveries = heapq.heappop(self._heap)
            token = f"{job_id}:{seq}"
            self._leases[token] = _Lease(job_id, worker, deliveries + 1, prio)
            return Claim(job_id=job_id, token=token, deliveries=deliveries + 1)

    def heartbeat(self, claim: Claim) -> str:
        with self._cond:
            lease = self._leases.get(claim.token)
            if lease is None:
                return GONE  # requeued as stale meanwhile
            lease.beat = time.monotonic()
            return HELD

    def ack(self, claim: Claim) -> None:
        with self._cond:
            self._leases.pop(claim.token, None)

    def requeue_stale(self, *, older_than: float) -> list[str]:
        now = time.monotonic()
        with self._cond:
            stale = [t for t, lease in self._leases.items() if now - lease.beat > older_than]
            leases = [self._leases.pop(t) for t in stale]
        for lease in leases:
            self._push(lease.job_id, lease.priority, lease.deliveries)
        return [lease.job_id for lease in leases]

    def release(self, claim: Claim) -> None:
        """Give a claim back unchanged (same priority and delivery count), behind its peers."""
        with self._cond:
            lease = self._leases.pop(claim.token, None)
        if lease is not None:
            self._push(lease.job_id, lease.priority, lease.deliveries - 1)

    def queued_ids(self) -> list[str]:
        """Every job waiting or claimed and not yet acked."""
        with self._cond:
            return [e[2] for e in self._heap] + [lease.job_id for lease in self._leases.values()]

    def __len__(self) -> int:
        with self._cond:
            return len(self._heap)
