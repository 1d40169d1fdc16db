"""``pitwall serve``, ``pitwall api`` and ``pitwall admin``: run the API, manage identities.

``serve`` is the embedded mode (docs/architecture.md §7): the API and N worker threads in
one process (:class:`~pitwall_executor.orchestration.embedded.EmbeddedServer`). ``api``
runs the API alone, for deployments whose workers run as ``pitwall worker`` processes.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading

import click

from pitwall_executor.cli.app import config_of
from pitwall_executor.jobs.researchers import ResearcherExistsError, create_researcher
from pitwall_executor.orchestration.embedded import DataDirInUseError, EmbeddedServer
from pitwall_executor.orchestration.process import DEFAULT_NICE
from pitwall_executor.stack import Stack


def freeze_startup_heap() -> None:
    """Take what start-up built (modules, models, the app) out of the collector's scans.

    The imports leave a large heap of long-lived objects; every full collection walked
    all of it while holding the GIL, and those pauses were the tail of the status reads
    (docs/benchmarks.md, "API status reads"). Frozen, they are never collected (they
    live as long as the process anyway) and a full collection walks only what was made
    since.
    """
    gc.collect()
    gc.freeze()


def _wait_for_signal() -> None:
    got = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: got.set())
    while not got.wait(1.0):
        pass


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
    cfg = config_of(ctx)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    n = cfg.workers if workers is None else workers
    server = EmbeddedServer(Stack.from_config(cfg), port=port, host=host, workers=n,
                            worker_nice=nice)
    try:
        server.start()
    except DataDirInUseError as exc:  # another serve or lab runs this data dir's jobs
        raise click.ClickException(str(exc)) from exc
    freeze_startup_heap()
    try:
        click.echo(f"pitwall API on {server.url} with {n} worker thread(s); Ctrl-C stops")
        _wait_for_signal()
    finally:
        server.stop()
    click.echo("stopped")


@click.command("api")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.pass_context
def api(ctx: click.Context, port: int, host: str) -> None:
    """Run the API only; workers run elsewhere (`pitwall worker`)."""
    cfg = config_of(ctx)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with EmbeddedServer(Stack.from_config(cfg), port=port, host=host, workers=0) as server:
        freeze_startup_heap()
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
    stack = Stack.from_config(config_of(ctx))
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
