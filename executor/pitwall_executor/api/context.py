"""What every handler shares: the stack, the DB thread pool, the secret, the metrics."""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pitwall.models import JobView
from pitwall_executor.api.metrics import ApiMetrics
from pitwall_executor.jobs.researchers import Researcher, authenticate, token_digest
from pitwall_executor.jobs.store import AsyncStatusReader
from pitwall_executor.stack import Stack

T = TypeVar("T")
AUTH_CACHE_S = 30.0
ENDED_CACHE = 4096  # views of ended jobs kept by the API process (a few MB)
SUBMIT_THREADS = 2


@dataclass
class ApiContext:
    """Shared state of one API process."""

    stack: Stack
    secret: bytes
    pool: ThreadPoolExecutor
    #: Status reads and token checks get their own threads: a burst of submissions queued on
    #: ``pool`` must not hold a status read behind it (FIFO) — that was the p99 under load.
    read_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=4, thread_name_prefix="pitwall-api-read"))
    #: Submissions (bundle checks and hashing, the spec, the insert) are mostly Python
    #: holding the GIL: a burst of them on ``pool``'s many threads kept the IOLoop thread
    #: from the GIL for a long time, stalling every status read (docs/benchmarks.md, "API
    #: status reads"). A few threads submit as fast and leave the loop its turns.
    submit_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=SUBMIT_THREADS, thread_name_prefix="pitwall-api-submit"))
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    report_ttl_s: float = 300.0
    events_poll_s: float = 0.25
    max_page: int = 200
    _auth_cache: dict[str, tuple[Researcher, float]] = field(default_factory=dict)
    _auth_lock: threading.Lock = field(default_factory=threading.Lock)
    # Only touched on the IOLoop thread: no lock.
    _ended: OrderedDict[str, JobView] = field(default_factory=OrderedDict)
    #: The status read awaited on the IOLoop itself (PostgreSQL); None: ``read_pool``.
    status_reader: AsyncStatusReader | None = None

    def __post_init__(self) -> None:
        if self.status_reader is None:
            self.status_reader = self.stack.store.status_reader()

    @property
    def max_bundle_bytes(self) -> int:
        return self.stack.config.max_bundle_mb * 2**20

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking store call on the DB pool so the IOLoop never waits on the database."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    async def run_submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like :meth:`run` on the submission pool: for submissions and bundling."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.submit_pool,
                                          functools.partial(fn, *args, **kwargs))

    async def run_read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Like :meth:`run` on the read pool: for short reads on the hot path."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.read_pool,
                                          functools.partial(fn, *args, **kwargs))

    def shutdown(self) -> None:
        """Stop the thread pools without waiting for queued calls; close the status reader."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.submit_pool.shutdown(wait=False, cancel_futures=True)
        self.read_pool.shutdown(wait=False, cancel_futures=True)
        if self.status_reader is not None:
            self.status_reader.close()

    async def job_view(self, job_id: str) -> JobView:
        """The job's view; an ended job's from memory, as it can never change again.

        A terminal state is final (the database refuses any later transition, and nothing
        writes a terminal job's row), so the view of an ended job is cached: most status
        reads of finished jobs cost neither a database round trip nor a thread hop.
        """
        view = self._ended.get(job_id)
        if view is not None:
            self._ended.move_to_end(job_id)
            return view
        if self.status_reader is not None:
            view = await self.status_reader.get(job_id)
        else:
            view = await self.run_read(self.stack.store.get, job_id)
        if view.status.terminal:
            self._ended[job_id] = view
            if len(self._ended) > ENDED_CACHE:
                self._ended.popitem(last=False)
        return view

    async def authenticate(self, token: str) -> Researcher | None:
        """The token's researcher; cached for a few seconds to spare the DB a query per call."""
        digest = token_digest(token)
        now = time.monotonic()
        with self._auth_lock:
            hit = self._auth_cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        who = await self.run_read(authenticate, self.stack.store, token)
        if who is not None:
            with self._auth_lock:
                if len(self._auth_cache) > 10_000:
                    self._auth_cache.clear()
                self._auth_cache[digest] = (who, now + AUTH_CACHE_S)
        return who
