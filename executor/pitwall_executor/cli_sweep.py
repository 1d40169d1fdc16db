"""``pitwall run STRATEGY --grid fast=5,10 --grid slow=60,120``: a sweep in embedded mode.

The sweep is submitted to the configured stack, its children run one after the other
on an in-process worker until every one has ended, and the results table is printed.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from typing import Any

import click

from pitwall.errors import PitwallError
from pitwall.models import BacktestSpec, JobView
from pitwall_executor.config import Config
from pitwall_executor.stack import Stack
from pitwall_executor.sweeps import SweepRow

IDLE_LIMIT_S = 30.0  # the queue stayed empty this long with children still pending
COLUMNS = ("sharpe", "total_return", "max_drawdown", "cagr", "n_trades")


def parse_grid(items: tuple[str, ...]) -> dict[str, list[Any]]:
    """``("fast=5,10", "slow=60")`` → ``{"fast": [5, 10], "slow": [60]}`` (JSON values,
    else strings)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier() or not raw:
            raise click.BadParameter(f"{item!r}: write a grid axis as name=v1,v2,...",
                                     param_hint="--grid")
        if key in grid:
            raise click.BadParameter(f"{key!r} is given twice; list all its values in one "
                                     "--grid", param_hint="--grid")
        grid[key] = [_value(v.strip()) for v in raw.split(",")]
    return grid


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def run_sweep_embedded(cfg: Config, spec: BacktestSpec, bundle: bytes,
                       grid: dict[str, list[Any]]) -> tuple[JobView, list[SweepRow]]:
    """Submit a sweep and run its children on an in-process worker until all have ended."""
    from pitwall_executor.worker import Worker

    stack = Stack.from_config(cfg)
    researcher = os.environ.get("PITWALL_RESEARCHER") or getpass.getuser()
    try:
        parent = stack.submit_sweep(spec, bundle, grid, researcher=researcher)
    except PitwallError as exc:
        raise click.ClickException(str(exc)) from exc
    worker = Worker(stack)
    idle_since = time.monotonic()
    while not (view := stack.store.get(parent)).status.terminal:
        if worker.run_one(timeout=1.0) is not None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since > IDLE_LIMIT_S:
            raise click.ClickException(
                f"sweep {parent} is still {view.status.value} but no run reached this "
                f"process's queue for {IDLE_LIMIT_S:.0f} s; another worker may hold them "
                f"(`pitwall jobs show {parent}`)")
    return view, stack.store.sweep_results(parent)


def print_results(view: JobView, rows: list[SweepRow]) -> None:
    """The sweep's status line and one table row per child."""
    click.echo(f"sweep {view.id}: {view.status.value}"
               + (f" — {view.reason}" if view.reason else ""))
    names = list(rows[0].params) if rows else []
    header = [*names, "status", *COLUMNS, "job"]
    table = [header]
    for row in rows:
        m = row.metrics
        figures = [_fmt(getattr(m, c)) if m is not None else "-" for c in COLUMNS]
        table.append([*(json.dumps(row.params[n]) for n in names), row.status.value,
                      *figures, row.job_id])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        click.echo("  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)))
    for row in rows:  # why a run did not complete, under the table
        if row.reason:
            click.echo(f"{row.job_id}: {row.status.value} — {row.reason}")


def _fmt(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"
