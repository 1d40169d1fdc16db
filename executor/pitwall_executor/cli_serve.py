"""``pitwall serve``, ``pitwall api`` and ``pitwall admin``: run the API, manage identities.

``serve`` is the embedded mode (DESIGN.md §7): the API and N worker threads in one
process, sharing one Stack (SQLite and the in-process queue by default). ``api`` runs
the API alone, for deployments whose workers run as ``pitwall worker`` processes.
:class:`EmbeddedServer` is the same thing as an object, for tests and benchmarks.

With workers, ``serve`` first recovers what a killed ``serve`` left behind (jobs
RUNNING or PENDING in its database: re-enqueued, or FAILED after ``max_attempts``
deaths), then runs the recovery loop beside its workers. Its worker threads run at
nice ``--nice`` (they and their sandboxes yield the CPU to the API thread); they still
share the GIL with the API, which is why production runs ``pitwall api`` and
``pitwall worker`` as separate processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from typing import TYPE_CHECKING, Any

import click

from pitwall_executor.auth import ResearcherExistsError, create_researcher
from pitwall_executor.config import Config
from pitwall_executor.queue import MemoryQueue
from pitwall_executor.recovery import RecoveryLoop, recover_at_startup
from pitwall_executor.stack import Stack
from pitwall_executor.worker_main import DEFAULT_NICE, lower_cpu_priority

if TYPE_CHECKING:
    from pitwall_executor.worker import Worker

log = logging.getLogger(__name__)


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
        from pitwall_executor.worker import Worker

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
        from pitwall_executor.api.app import api_context, make_app, start_server

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


def _wait_for_signal() -> None:
    got = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: got.set())
    while not got.wait(1.0):
        pass


def _config(ctx: click.Context) -> Config:
    cfg = ctx.obj
    assert isinstance(cfg, Config)
    return cfg


@click.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--workers", type=click.IntRange(0, 256), default=None,
              help="In-process worker threads (default: the config's `workers`).")
@click.option("--nice", type=click.IntRange(0, 19), default=DEFAULT_NICE, show_default=True,
              help="CPU nice value of the worker threads and their sandboxes (the API "
                   "thread keeps the normal priority).")
@click.pass_context
def serve(ctx: click.Context, port: int, host: str, workers: int | None, nice: int) -> None:
    """Run the API and workers in one process (the embedded mode)."""
    cfg = _config(ctx)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    n = cfg.workers if workers is None else workers
    with EmbeddedServer(Stack.from_config(cfg), port=port, host=host, workers=n,
                        worker_nice=nice) as server:
        click.echo(f"pitwall API on {server.url} with {n} worker thread(s); Ctrl-C stops")
        _wait_for_signal()
    click.echo("stopped")


@click.command("api")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.pass_context
def api(ctx: click.Context, port: int, host: str) -> None:
    """Run the API only; workers run elsewhere (`pitwall worker`)."""
    cfg = _config(ctx)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with EmbeddedServer(Stack.from_config(cfg), port=port, host=host, workers=0) as server:
        click.echo(f"pitwall API on {server.url}; Ctrl-C stops")
        _wait_for_signal()


@click.group("admin")
def admin() -> None:
    """Administer researchers and their API tokens."""


@admin.command("create-researcher")
@click.argument("name")
@click.option("--admin", "is_admin", is_flag=True, help="May see and cancel every job.")
@click.pass_context
def create_researcher_cmd(ctx: click.Context, name: str, is_admin: bool) -> None:
    """Create researcher NAME and print their API token (shown only this once)."""
    stack = Stack.from_config(_config(ctx))
    try:
        token = create_researcher(stack.store, name, admin=is_admin)
    except (ResearcherExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        stack.store.close()
    role = "admin" if is_admin else "researcher"
    click.echo(f"created {role} {name}; their API token (shown once, store it now):",
               err=True)
    click.echo(token)
