"""``pitwall worker``: run worker slots and the recovery loop in this process."""

from __future__ import annotations

import logging
import sys

import click

from pitwall_executor.cli.app import config_of
from pitwall_executor.orchestration.health import GIVE_UP_AFTER_S
from pitwall_executor.orchestration.process import (
    DEFAULT_NICE,
    WorkerOptions,
    WorkerProcess,
    auto_slots,
)
from pitwall_executor.stack import Stack


@click.command("worker")
@click.option("--slots", type=click.IntRange(0, 256), default=None,
              help="Jobs run at once (default: min(CPUs, memory / limits.memory_mb)); "
                   "0 runs only the recovery loop.")
@click.option("--grace", "grace_s", type=click.FloatRange(0), default=None,
              help="On SIGTERM, seconds to finish running jobs before handing them back "
                   "(default: the config's grace_s).")
@click.option("--recovery/--no-recovery", default=True, show_default=True,
              help="Also run the recovery loop (reclaim jobs of dead workers, reconcile "
                   "the queue with the database).")
@click.option("--nice", type=click.IntRange(0, 19), default=DEFAULT_NICE, show_default=True,
              help="CPU nice value of this process and its sandboxes: batch work yields to "
                   "an API on the same host (0 keeps the normal priority).")
@click.option("--name", default=None, help="Worker name prefix (default: host:pid).")
@click.option("--health-port", type=click.IntRange(0, 65535), default=None,
              help="Serve GET /healthz (503 when a loop is dead or stuck) and GET /metrics "
                   "(pitwall_worker_up{loop=...}) on this port (0: a free one, logged).")
@click.option("--health-host", default="0.0.0.0", show_default=True)
@click.option("--give-up-after", "give_up_after_s", type=click.FloatRange(1),
              default=GIVE_UP_AFTER_S, show_default=True,
              help="Seconds a loop may fail in a row (Redis or the database down) before "
                   "the process exits with status 1 for its supervisor to restart it.")
@click.option("--log-level", default="INFO", show_default=True)
@click.pass_context
def worker(ctx: click.Context, slots: int | None, grace_s: float | None, recovery: bool,
           nice: int, name: str | None, health_port: int | None, health_host: str,
           give_up_after_s: float, log_level: str) -> None:
    """Run jobs from the queue until SIGTERM, then finish or hand them back.

    Exits with status 1 when one of its loops died or is stuck, for a supervisor
    (systemd, Kubernetes) to start a fresh process.
    """
    cfg = config_of(ctx)
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    n = auto_slots(cfg) if slots is None else slots
    if n == 0 and not recovery:
        raise click.BadParameter("--slots 0 with --no-recovery would do nothing",
                                 param_hint="--slots")
    options = WorkerOptions(slots=n, grace_s=cfg.grace_s if grace_s is None else grace_s,
                            recovery=recovery, name=name, nice=nice, health_port=health_port,
                            health_host=health_host, give_up_after_s=give_up_after_s)
    process = WorkerProcess(Stack.from_config(cfg), options)
    click.echo(f"pitwall worker: {n} slot(s), queue {cfg.queue_url}, recovery "
               f"{'on' if recovery else 'off'}, nice {nice}; SIGTERM stops")
    sys.exit(process.serve())
