"""``pitwall run`` and ``pitwall jobs``: submit a strategy file, show jobs and metrics."""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import click
import polars as pl
from pydantic import ValidationError

from pitwall.bundle import build_bundle
from pitwall.engine.audit import describe
from pitwall.engine.report import format_metrics, period
from pitwall.errors import PitwallError
from pitwall.models import BacktestSpec, Costs, EngineKind, JobStatus, JobView, Limits
from pitwall.text import printable_line
from pitwall_executor.cli.app import config_of
from pitwall_executor.cli.sweep import parse_grid, print_results
from pitwall_executor.config import Config
from pitwall_executor.orchestration.embedded import run_embedded, run_sweep_embedded
from pitwall_executor.stack import Stack
from pitwall_executor.storage.artifacts import ArtifactError, read_artifact


def _parse_params(items: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise click.BadParameter(f"{item!r}: write parameters as name=value",
                                     param_hint="--param")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


@click.command("run")
@click.argument("strategy", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--symbols", required=True, help="Comma-separated universe, e.g. AAPL,MSFT.")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--dataset", default="sample", show_default=True)
@click.option("--version", "data_version", type=int, default=None, help="Pin a dataset version.")
@click.option("--param", "params", multiple=True, help="Strategy parameter name=value (repeat).")
@click.option("--grid", "grid", multiple=True,
              help="Sweep axis name=v1,v2 (repeat): one run per combination, then a table.")
@click.option("--capital", type=float, default=1_000_000.0, show_default=True)
@click.option("--commission-bps", type=float, default=0.0, show_default=True)
@click.option("--slippage-bps", type=float, default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--timeout", type=float, default=None, help="Wall-clock limit in seconds.")
@click.option("--memory-mb", type=int, default=None, help="Memory limit of the sandbox.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@click.option("--engine", type=click.Choice(["vectorized", "event"]), default="vectorized",
              show_default=True, help="event: a pitwall.Strategy fed bar by bar in lock-step.")
@click.option("--no-audit", "no_audit", is_flag=True,
              help="Skip the lookahead audit (re-runs on cut data) of a vectorized strategy.")
@click.option("--audit-level", type=click.Choice(["default", "thorough"]), default="default",
              show_default=True, help="thorough: 4x the cuts, a fresh process for each.")
@click.option("--stepped", default=None, metavar="SCHEDULE",
              help="Call a vectorized strategy on the bars up to each decision time only: "
                   "bar, daily, <N>min or at:HH:MM[,HH:MM] (New York time).")
@click.pass_context
def run(ctx: click.Context, strategy: Path, symbols: str, start: dt.datetime, end: dt.datetime,
        dataset: str, data_version: int | None, params: tuple[str, ...], capital: float,
        commission_bps: float, slippage_bps: float, seed: int, timeout: float | None,
        memory_mb: int | None, as_json: bool, engine: str = "vectorized",
        grid: tuple[str, ...] = (), no_audit: bool = False, audit_level: str = "default",
        stepped: str | None = None) -> None:
    """Run STRATEGY.py through the sandbox on the embedded stack and print its metrics.

    When a Pitwall server (``pitwall serve``, JupyterLab) runs the jobs of this data dir,
    the job is submitted to it (it shows in the lab's panel); otherwise this process runs
    it, and Ctrl-C cancels it."""
    cfg = config_of(ctx)
    overrides = {"timeout_s": timeout, "memory_mb": memory_mb}
    try:
        limits = Limits.model_validate(
            {**cfg.limits.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
        )
        spec = BacktestSpec(
            dataset=dataset, version=data_version,
            universe=[s.strip() for s in symbols.split(",") if s.strip()],
            start=start.date(), end=end.date(), capital=capital,
            costs=Costs(commission_bps=commission_bps, slippage_bps=slippage_bps),
            params=_parse_params(params), seed=seed, limits=limits, engine=EngineKind(engine),
            audit=not no_audit, audit_level=audit_level, stepped=stepped,
        )
    except ValidationError as exc:
        raise click.ClickException(_validation_message(exc)) from exc
    bundle = build_bundle({"strategy.py": strategy.read_bytes()}, entrypoint="strategy.py",
                          kind=engine)
    def notify(message: str) -> None:
        click.echo(message, err=True)

    if grid:  # a sweep: every combination of the --grid values, then the results table
        try:
            sweep, rows = run_sweep_embedded(cfg, spec, bundle, parse_grid(grid), notify=notify)
        except PitwallError as exc:
            raise click.ClickException(str(exc)) from exc
        print_results(sweep, rows)
        sys.exit(0 if all(r.status is JobStatus.COMPLETED for r in rows) else 1)
    stack = Stack.from_config(cfg)
    try:
        view = run_embedded(stack, spec, bundle, notify=notify)
    except PitwallError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(view.model_dump_json(indent=2))
    else:
        _print_job(view, stack)
    if view.status is not JobStatus.COMPLETED:
        sys.exit(1)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        parts.append(f"{where}: {err['msg']}")
    return "invalid backtest: " + "; ".join(parts)


def _reason(view: JobView) -> str:
    """The job's reason as one printable line: it may quote what the strategy printed."""
    return printable_line(view.reason or "")


def _print_job(view: JobView, stack: Stack) -> None:
    click.echo(f"job {view.id}: {view.status.value}"
               + (f" — {_reason(view)}" if view.reason else ""))
    if view.metrics is not None:
        rows = format_metrics(view.metrics)
        width = max(len(label) for label, _ in rows)
        for label, text in rows:
            click.echo(f"  {label:<{width}}  {text}")
        if view.metrics.lookahead is not None:  # the audit's verdict, one sentence
            click.echo(describe(view.metrics.lookahead))
    artifacts = stack.store.artifacts(view.id)
    equity = artifacts.get("equity.parquet")
    if view.metrics is not None and equity is not None:
        _print_period(view, equity, stack.config)
    for name, label in (("report.html", "report"), ("log.txt", "log")):
        if name in artifacts:
            click.echo(f"{label}: {_location(artifacts[name]['uri'])}")
            break


def _print_period(view: JobView, equity: dict[str, Any], cfg: Config) -> None:
    """The period the bars covered, read from the recorded equity curve (local or S3)."""
    assert view.metrics is not None
    try:
        data = read_artifact(equity["uri"], cfg, sha256=equity["sha256"])
    except ArtifactError as exc:
        click.echo(f"period: unknown ({exc})", err=True)
        return
    first, last = pl.read_parquet(io.BytesIO(data), columns=["ts"]).select(
        first=pl.col("ts").min().dt.date(), last=pl.col("ts").max().dt.date()).row(0)
    text, short = period(first, last, view.metrics.n_days, (view.spec.start, view.spec.end))
    click.echo(("warning: period " if short else "period: ") + text)


def _location(uri: str) -> str:
    """A local artifact as its path (to open it), anything else as its URI."""
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri


@click.group("jobs")
def jobs() -> None:
    """Inspect jobs."""


@jobs.command("list")
@click.option("--status", type=click.Choice([s.value for s in JobStatus]), default=None)
@click.option("--limit", type=int, default=20, show_default=True)
@click.pass_context
def jobs_list(ctx: click.Context, status: str | None, limit: int) -> None:
    """List recent jobs."""
    stack = Stack.from_config(config_of(ctx))
    for view in stack.store.list_jobs(status=JobStatus(status) if status else None, limit=limit):
        sharpe = f"{view.metrics.sharpe:.3f}" if view.metrics else "-"
        click.echo(f"{view.id}  {view.status.value:<9}  {view.created_at:%Y-%m-%d %H:%M:%S}  "
                   f"sharpe={sharpe}  {_reason(view)}")


@jobs.command("show")
@click.argument("job_id")
@click.pass_context
def jobs_show(ctx: click.Context, job_id: str) -> None:
    """Show one job with its metrics."""
    stack = Stack.from_config(config_of(ctx))
    try:
        _print_job(stack.store.get(job_id), stack)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
