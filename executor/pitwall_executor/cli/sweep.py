"""``pitwall run STRATEGY --grid fast=5,10 --grid slow=60,120``: parse the grid, print
the results table and the overfitting statistics under it, the sweep's report
(docs/overfitting.md; the sweep itself runs in
:func:`~pitwall_executor.orchestration.embedded.run_sweep_embedded`)."""

from __future__ import annotations

import json
from typing import Any

import click

from pitwall.engine.tearsheet_page import describe_preset
from pitwall.models import JobView, ParamValue
from pitwall_executor.execution.overfitting import sweep_overfitting
from pitwall_executor.jobs.sweeps import Overfitting, SweepRow
from pitwall_executor.stack import Stack

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


def print_results(view: JobView, rows: list[SweepRow], stack: Stack | None = None) -> None:
    """The sweep's status line, one table row per child and the costs preset of its runs;
    with ``stack``, the sweep's overfitting statistics under the table
    (:func:`print_overfitting`)."""
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
    # Every run's spec is the sweep's with its grid point: one preset for all.
    click.echo("costs preset: " + describe_preset(view.spec.costs_preset,
                                                  view.spec.default_costs_preset))
    if stack is not None:
        print_overfitting(*sweep_overfitting(stack, view, rows))


def print_overfitting(result: Overfitting | None, note: str | None) -> None:
    """How likely the best run is a fluke: the verdict, then DSR, PBO and walk-forward."""
    click.echo("")
    if result is None:
        click.echo(f"overfitting: not computed — {note}")
        return
    click.echo(("WARNING: " if result.overfit else "") + f"overfitting: {result.verdict}")
    lines = [
        ("best run", f"{result.best_job_id} ({_params(result.best_params)}), Sharpe "
                     f"{result.best_sharpe:.2f}"),
        ("trials", f"{result.n_trials} (effective {result.effective_trials:.1f}, mean "
                   f"correlation {result.mean_correlation:.2f}) over {result.n_days} days"),
        ("DSR", f"{result.dsr:.3f} (expected best Sharpe of no skill "
                f"{result.expected_max_sharpe:.2f}; skill needs 0.95)"),
    ]
    if result.pbo is not None and result.logits is not None:
        lines.append(("PBO", f"{result.pbo:.3f} by CSCV with S={result.cscv_splits} (median "
                             f"logit {result.logits[2]:.2f}, degradation slope "
                             f"{result.degradation_slope:.2f}, P(OOS loss) "
                             f"{result.prob_oos_loss:.2f})"))
    if result.walk_forward is not None and result.oos_sharpe is not None:
        lines.append(("walk-forward", f"out-of-sample Sharpe {result.oos_sharpe:.2f} over "
                                      f"{len(result.walk_forward)} folds"))
    width = max(len(label) for label, _ in lines)
    for label, text in lines:
        click.echo(f"  {label:<{width}}  {text}")
    for fold in result.walk_forward or []:
        click.echo(f"    train {fold.train_start}..{fold.train_end}  test {fold.test_start}.."
                   f"{fold.test_end}  {_params(fold.params)}  Sharpe {fold.train_sharpe:.2f} → "
                   f"{fold.test_sharpe:.2f}")
    for problem in result.problems:
        click.echo(f"  note: {problem}")


def _params(params: dict[str, ParamValue]) -> str:
    return " ".join(f"{k}={json.dumps(v)}" for k, v in params.items())


def _fmt(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4f}"
