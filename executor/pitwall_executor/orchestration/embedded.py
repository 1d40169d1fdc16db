"""The embedded mode as runtime objects: the API and workers in one process.

:class:`EmbeddedServer` is ``pitwall serve`` as an object (the API on its own IOLoop
thread plus N worker threads sharing one :class:`~pitwall_executor.stack.Stack`); the
server extension, tests and benchmarks start it. :func:`run_embedded` and
:func:`run_sweep_embedded` are ``pitwall run``: they submit to the embedded server of the
data dir when one runs, else run the job (or sweep) in this process until it ends. See
docs/architecture.md §7.

A server with workers owns its data dir (:mod:`.ownership`): one per data dir. Before its
workers start it takes back what dead workers left (a killed predecessor's jobs at once,
never a live process's), then runs the recovery loop beside them. Its loops survive their
failures (:mod:`.health`) and the API's ``/healthz`` reports them. Worker threads run at
nice ``worker_nice`` (they and their sandboxes yield the CPU to the API thread); they
still share the GIL with the API, which is why production runs ``pitwall api`` and
``pitwall worker`` as separate processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pitwall.models import BacktestSpec, JobView
from pitwall_executor.api.app import api_context, make_app, start_server
from pitwall_executor.config import Config, researcher_name
from pitwall_executor.jobs.researchers import authenticate, local_token
from pitwall_executor.jobs.store import MetadataStore
from pitwall_executor.jobs.sweeps import SweepRow
from pitwall_executor.orchestration import local_run, server_client
from pitwall_executor.orchestration.health import Health
from pitwall_executor.orchestration.ownership import (
    DataDirInUseError,
    Ownership,
    running_server,
)
from pitwall_executor.orchestration.process import lower_cpu_priority
from pitwall_executor.orchestration.recovery import RecoveryLoop, recover_at_startup
from pitwall_executor.orchestration.worker import Worker
from pitwall_executor.sandbox import reap_orphans
from pitwall_executor.stack import Stack

log = logging.getLogger(__name__)
TOKEN_FILE = "embedded-token"  # the researcher `pitwall run` submits as, beside a serve


class EmbeddedServer:
    """The API (on its own IOLoop thread) plus ``workers`` in-process worker threads.

    ``token``: a researcher token that local clients (``pitwall run``) may use; by
    default one is made once and kept in the data dir.
    """

    def __init__(self, stack: Stack, *, port: int = 0, host: str = "127.0.0.1",
                 workers: int = 0, worker_nice: int = 0, recovery_interval_s: float | None = None,
                 token: str | None = None, **app_options: Any) -> None:
        self.stack = stack
        self.host = host
        self.port = port
        self.workers = workers
        self.worker_nice = worker_nice
        self.recovery_interval_s = recovery_interval_s
        self.token = token
        self.app_options = app_options
        # Loops never give up here: this process is a lab or a laptop's serve, and a
        # restart is the user's call; /healthz says what is wrong meanwhile.
        self.health = Health(give_up_after_s=float("inf"))
        self._ownership: Ownership | None = None
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
        """Own the data dir, recover, start the worker threads and the API; return once
        the API listens. Raises :class:`DataDirInUseError` if another stack owns it."""
        if self.workers:
            self._own_data_dir()
        try:
            self._start()
        except BaseException:
            self.stop(timeout=5.0)
            raise
        return self

    def _start(self) -> None:
        if self.workers:
            self._recover()
        for i in range(self.workers):
            worker = Worker(self.stack, name=f"embedded-{os.getpid()}-{i}",
                            loop=self.health.loop(f"worker-{i}"))
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
        if self._ownership is not None:
            self._ownership.publish(self.url, self.token or _kept_token(self.stack))

    def _own_data_dir(self) -> None:
        data_dir = self.stack.config.data_dir
        ownership = Ownership(data_dir)
        if not ownership.acquire():
            other = running_server(data_dir)
            where = f" at {other.url} (pid {other.pid})" if other is not None else ""
            raise DataDirInUseError(
                f"another Pitwall server runs the jobs of {data_dir}{where}; use it (`pitwall "
                "run` submits to it), stop it first, or give this one another data dir "
                "(PITWALL_DATA_DIR)")
        self._ownership = ownership

    def _recover(self) -> None:
        """Take back what dead workers left, then keep the recovery loop running."""
        cfg, store, queue = self.stack.config, self.stack.store, self.stack.queue
        for rec in recover_at_startup(store, queue, max_attempts=cfg.max_attempts,
                                      stale_after_s=cfg.stale_after_s,
                                      artifacts=self.stack.artifacts):
            log.warning("job %s was left RUNNING (attempt %d) by a worker that died: now %s",
                        rec.job_id, rec.attempt, rec.status.value)
        loop = RecoveryLoop(store, queue, stale_after_s=cfg.stale_after_s,
                            max_attempts=cfg.max_attempts, interval_s=self.recovery_interval_s,
                            artifacts=self.stack.artifacts, reap=lambda: reap_orphans(cfg),
                            loop=self.health.loop("recovery"))
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
        loops = self.health if self.workers else None
        app = make_app(self.stack, loops=loops, **self.app_options)
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
        """Stop the API and let each worker finish its current job; give up the data dir."""
        self._stop.set()
        if self._loop is not None and self._done is not None:
            self._loop.call_soon_threadsafe(self._done.set)
        for thread in self._threads:
            thread.join(timeout)
        if self._ownership is not None:
            self._ownership.release()
            self._ownership = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _kept_token(stack: Stack) -> str:
    return kept_token(stack.store, stack.config.data_dir)


def kept_token(store: MetadataStore, data_dir: Path) -> str:
    """The token of the machine's local researcher (:func:`researcher_name`) for local
    clients (``pitwall run`` beside a serve, JupyterLab's kernels), made once and kept in
    the data dir (0600); made again if the database no longer knows it (another
    ``db_url``)."""
    path = data_dir / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        who = authenticate(store, token)
        if who is not None and who.name == researcher_name():
            return token
        path.unlink()
    token = local_token(store, researcher_name())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token)
    return token


Notify = Callable[[str], None]


def run_embedded(where: Config | Stack, spec: BacktestSpec, bundle: bytes,
                 notify: Notify = log.info,
                 on_metrics: Callable[[JobView], None] | None = None) -> JobView:
    """Run a job until it ends, on the stack ``where`` names (a configuration, as notebooks
    call it, or a stack already built): through the data dir's embedded server when one
    runs (``notify`` is told so), else with a worker in this process. ``on_metrics`` is
    given the job's view once its metrics are committed while its audit still runs
    (:func:`local_run.metrics_first`)."""
    stack = where if isinstance(where, Stack) else Stack.from_config(where)
    server = running_server(stack.config.data_dir)
    if server is not None:
        job_id = server_client.submit(server, spec, bundle)
        notify(f"job {job_id} submitted to the Pitwall server of this data dir "
               f"({server.url}); waiting for it to end")
        with local_run.metrics_first(stack, job_id, on_metrics):
            return local_run.wait_for(stack, server, job_id, [job_id])
    job_id = stack.submit(spec, bundle, researcher=_researcher())
    with local_run.metrics_first(stack, job_id, on_metrics):
        return local_run.run_here(stack, job_id, [job_id])


def run_sweep_embedded(where: Config | Stack, spec: BacktestSpec, bundle: bytes,
                       grid: dict[str, list[Any]], notify: Notify = log.info,
                       ) -> tuple[JobView, list[SweepRow]]:
    """Run a sweep until all its runs have ended, like :func:`run_embedded`."""
    stack = where if isinstance(where, Stack) else Stack.from_config(where)
    server = running_server(stack.config.data_dir)
    if server is not None:
        parent = server_client.submit(server, spec, bundle, grid)
        notify(f"sweep {parent} submitted to the Pitwall server of this data dir "
               f"({server.url}); waiting for its runs to end")
        children = [row.job_id for row in stack.store.sweep_results(parent)]
        view = local_run.wait_for(stack, server, parent, children)
    else:
        parent = stack.submit_sweep(spec, bundle, grid, researcher=_researcher())
        children = [row.job_id for row in stack.store.sweep_results(parent)]
        view = local_run.run_here(stack, parent, children)
    return view, stack.store.sweep_results(parent)


def _researcher() -> str:
    return researcher_name()


__all__ = ["DataDirInUseError", "EmbeddedServer", "kept_token", "run_embedded",
           "run_sweep_embedded"]
