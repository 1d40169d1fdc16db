"""The embedded mode as runtime objects: the API and workers in one process.

:class:`EmbeddedServer` is ``pitwall serve`` as an object (the API on its own IOLoop
thread plus N worker threads sharing one :class:`~pitwall_executor.stack.Stack`); the
server extension, tests and benchmarks start it. :func:`run_embedded` and
:func:`run_sweep_embedded` submit a job (or a sweep) and run it on an in-process worker
until it ends, as ``pitwall run`` and the notebooks do. See docs/architecture.md §7.

With workers, the server first recovers what a killed predecessor left behind (jobs
RUNNING or PENDING in its database: re-enqueued, or FAILED after ``max_attempts``
deaths), then runs the recovery loop beside its workers. Worker threads run at nice
``worker_nice`` (they and their sandboxes yield the CPU to the API thread); they still
share the GIL with the API, which is why production runs ``pitwall api`` and
``pitwall worker`` as separate processes.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import threading
import time
from typing import Any

from pitwall.errors import InfrastructureError
from pitwall.models import BacktestSpec, JobStatus, JobView
from pitwall_executor.api.app import api_context, make_app, start_server
from pitwall_executor.config import Config
from pitwall_executor.jobs.queue import MemoryQueue
from pitwall_executor.jobs.sweeps import SweepRow
from pitwall_executor.orchestration.process import lower_cpu_priority
from pitwall_executor.orchestration.recovery import RecoveryLoop, recover_at_startup
from pitwall_executor.orchestration.worker import Worker
from pitwall_executor.stack import Stack

log = logging.getLogger(__name__)

IDLE_LIMIT_S = 30.0  # a sweep's queue stayed empty this long with children still pending


class SweepStalledError(InfrastructureError):
    """A sweep's children stopped reaching this process's queue (another worker holds them)."""


class EmbeddedServer:
    """The API (on its own IOLoop thread) plus ``workers`` in-process worker threads."""

    def __init__(self, stack: Stack, *, port: int = 0, host: str = "127.0.0.1",
                 workers: int = 0, worker_nice: int = 0, recovery_interval_s: float | None = None,
                 **app_options: Any) -> None:
        self.stack = stack
        self.host = host
        self.port = port
        self.workers = workers
        self.worker_nice = worker_nice
        self.recovery_interval_s = recovery_interval_s
        self.app_options = app_options
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> EmbeddedServer:
        """Recover, start the worker threads and the API; return once the API listens."""
        if self.workers:
            self._recover()
        for i in range(self.workers):
            worker = Worker(self.stack, name=f"embedded-{os.getpid()}-{i}")
            thread = threading.Thread(target=self._work, args=(worker,),
                                      name=f"pitwall-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        api = threading.Thread(target=self._run_api, name="pitwall-api", daemon=True)
        api.start()
        self._threads.append(api)
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"the API did not start: {self._error}") from self._error
        return self

    def _recover(self) -> None:
        """Take back a killed predecessor's jobs, then keep the recovery loop running."""
        cfg, store, queue = self.stack.config, self.stack.store, self.stack.queue
        # On the in-process queue no other process can be running this database's jobs.
        exclusive = isinstance(queue, MemoryQueue)
        for rec in recover_at_startup(store, queue, max_attempts=cfg.max_attempts,
                                      exclusive=exclusive, stale_after_s=cfg.stale_after_s,
                                      artifacts=self.stack.artifacts):
            log.warning("job %s was left RUNNING (attempt %d) by a serve that died: now %s",
                        rec.job_id, rec.attempt, rec.status.value)
        loop = RecoveryLoop(store, queue, stale_after_s=cfg.stale_after_s,
                            max_attempts=cfg.max_attempts, interval_s=self.recovery_interval_s,
                            artifacts=self.stack.artifacts)
        thread = threading.Thread(target=loop.run, args=(self._stop,), name="pitwall-recovery",
                                  daemon=True)
        thread.start()
        self._threads.append(thread)

    def _work(self, worker: Worker) -> None:
        lower_cpu_priority(self.worker_nice)  # this thread and its sandboxes only (Linux)
        worker.run_forever(self._stop)

    def _run_api(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        app = make_app(self.stack, **self.app_options)
        server = start_server(app, self.port, address=self.host)
        self.port = next(iter(server._sockets.values())).getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        self._ready.set()
        await self._done.wait()
        server.stop()
        await server.close_all_connections()
        api_context(app).shutdown()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the API and let each worker finish its current job."""
        self._stop.set()
        if self._loop is not None and self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        for thread in self._threads:
            thread.join(timeout)

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def run_embedded(where: Config | Stack, spec: BacktestSpec, bundle: bytes) -> JobView:
    """Submit a job and run it with an in-process worker until it ends, on the stack
    ``where`` names (a configuration, as notebooks call it, or a stack already built)."""
    stack = where if isinstance(where, Stack) else Stack.from_config(where)
    researcher = os.environ.get("PITWALL_RESEARCHER") or getpass.getuser()
    job_id = stack.submit(spec, bundle, researcher=researcher)
    worker = Worker(stack)
    worker.run_one(timeout=5.0)
    # An infrastructure failure puts the job back in the queue for another attempt.
    while ((view := stack.store.get(job_id)).status is JobStatus.PENDING
           and worker.run_one(timeout=5.0) is not None):
        pass
    return view


def run_sweep_embedded(where: Config | Stack, spec: BacktestSpec, bundle: bytes,
                       grid: dict[str, list[Any]]) -> tuple[JobView, list[SweepRow]]:
    """Submit a sweep and run its children on an in-process worker until all have ended."""
    stack = where if isinstance(where, Stack) else Stack.from_config(where)
    researcher = os.environ.get("PITWALL_RESEARCHER") or getpass.getuser()
    parent = stack.submit_sweep(spec, bundle, grid, researcher=researcher)
    worker = Worker(stack)
    idle_since = time.monotonic()
    while not (view := stack.store.get(parent)).status.terminal:
        if worker.run_one(timeout=1.0) is not None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > IDLE_LIMIT_S:
            raise SweepStalledError(
                f"sweep {parent} is still {view.status.value} but no run reached this "
                f"process's queue for {IDLE_LIMIT_S:.0f} s; another worker may hold them "
                f"(`pitwall jobs show {parent}`)")
    return view, stack.store.sweep_results(parent)
