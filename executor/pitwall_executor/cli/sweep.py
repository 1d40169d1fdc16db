"""``pitwall run STRATEGY --grid fast=5,10 --grid slow=60,120``: parse the grid, print
the results table (the sweep itself runs in
:func:`~pitwall_executor.orchestration.embedded.run_sweep_embedded`)."""

from __future__ import annotations

import json
from typing import Any

import click

from pitwall.models import JobView
from pitwall_executor.jobs.sweeps import SweepRow

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
