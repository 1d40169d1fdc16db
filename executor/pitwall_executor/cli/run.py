"""``pitwall run`` and ``pitwall jobs``: submit a strategy file, show jobs and metrics."""

from __future__ import annotations

import datetime as dt
import io
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import click
import polars as pl
from pydantic import ValidationError

from pitwall.bundle import build_bundle
from pitwall.engine.audit import describe
from pitwall.engine.report import cost_warning, format_metrics, format_number, period, verdict
from pitwall.engine.tearsheet_page import describe_preset
from pitwall.errors import BundleError, PitwallError
from pitwall.models import (
    COSTS_PRESETS,
    BacktestSpec,
    Costs,
    EngineKind,
    JobStatus,
    JobView,
    Limits,
)
from pitwall.notebook_bundle import (
    NoStrategyError,
    bundle_notebook,
    detect_strategy,
    load_notebook,
)
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
@click.argument("strategy", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                metavar="STRATEGY.py|NOTEBOOK.ipynb")
@click.option("--symbols", required=True, help="Comma-separated universe, e.g. AAPL,MSFT.")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--dataset", default="sample", show_default=True)
@click.option("--version", "data_version", type=int, default=None, help="Pin a dataset version.")
@click.option("--param", "params", multiple=True, help="Strategy parameter name=value (repeat).")
@click.option("--grid", "grid", multiple=True,
              help="Sweep axis name=v1,v2 (repeat): one run per combination, then a table.")
@click.option("--capital", type=float, default=1_000_000.0, show_default=True)
@click.option("--costs-preset", type=click.Choice(list(COSTS_PRESETS)), default=None,
              help="Named costs and fill rules (docs/engine-conventions.md §2.3); default: "
                   "the deployment's default_costs_preset (retail unless configured). "
                   "frictionless: no costs at all. The cost options below override it.")
@click.option("--commission-bps", type=float, default=None,
              help="Default: the preset's (0 in every preset but institutional's 1).")
@click.option("--slippage-bps", type=float, default=None, help="Default: the preset's (0).")
@click.option("--commission-per-share", type=float, default=None,
              help="Currency per share traded. Default: the preset's (0).")
@click.option("--spread-bps", type=float, default=None, help="Default: the preset's.")
@click.option("--spread-model", type=click.Choice(["fixed", "range"]), default=None,
              help="fixed (the presets'): pay half of --spread-bps; range: half the fill "
                   "bar's high - low.")
@click.option("--borrow-bps", type=float, default=None,
              help="Annual rate on short notional. Default: the preset's (0).")
@click.option("--impact-coefficient", type=float, default=None,
              help="Y of the square-root market impact. Default: the preset's.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--timeout", type=float, default=None, help="Wall-clock limit in seconds.")
@click.option("--memory-mb", type=int, default=None, help="Memory limit of the sandbox.")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON.")
@click.option("--engine", type=click.Choice(["vectorized", "event"]), default=None,
              help="Default: the strategy's kind (a @pitwall.vectorized function: "
                   "vectorized; a pitwall.Strategy subclass: event, fed bar by bar).")
@click.option("--strategy", "strategy_name", default=None, metavar="NAME",
              help="The strategy to run when the file or notebook defines several.")
@click.option("--no-audit", "no_audit", is_flag=True,
              help="Skip the lookahead audit (re-runs on cut data) of a vectorized strategy.")
@click.option("--audit-level", type=click.Choice(["default", "thorough"]), default="default",
              show_default=True, help="thorough: 4x the cuts, a fresh process for each.")
@click.option("--stepped", default=None, metavar="SCHEDULE",
              help="Call a vectorized strategy on the bars up to each decision time only: "
                   "bar, daily, <N>min or at:HH:MM[,HH:MM] (New York time).")
@click.option("--benchmark", default=None, metavar="SYMBOL",
              help="Buy-and-hold benchmark for beta, alpha and the tear sheet: a symbol of "
                   "the dataset, in --symbols or not (e.g. an index series).")
@click.option("--universe-rule", default=None, metavar="RULE",
              help="Trade only the symbols of --symbols that meet RULE, evaluated point in "
                   "time, e.g. 'dollar_volume_20d > 1e6 at month_start'.")
@click.pass_context
def run(ctx: click.Context, strategy: Path, symbols: str, start: dt.datetime, end: dt.datetime,
        dataset: str, data_version: int | None, params: tuple[str, ...], capital: float,
        commission_bps: float | None, slippage_bps: float | None, seed: int,
        timeout: float | None, memory_mb: int | None, as_json: bool, engine: str | None = None,
        grid: tuple[str, ...] = (), no_audit: bool = False, audit_level: str = "default",
        stepped: str | None = None, strategy_name: str | None = None,
        commission_per_share: float | None = None, spread_bps: float | None = None,
        spread_model: str | None = None, borrow_bps: float | None = None,
        benchmark: str | None = None, universe_rule: str | None = None,
        costs_preset: str | None = None, impact_coefficient: float | None = None) -> None:
    """Run STRATEGY (a .py file or a notebook .ipynb) through the sandbox on the embedded
    stack and print its metrics.

    A notebook is bundled by the Run Backtest button's rule (docs/notebooks.md): its one
    strategy plus the cells it depends on by name; its pitwall:params cell gives the
    default parameters. The engine follows the strategy's kind.

    When a Pitwall server (``pitwall serve``, JupyterLab) runs the jobs of this data dir,
    the job is submitted to it (it shows in the lab's panel); otherwise this process runs
    it, and Ctrl-C cancels it.

    Costs: the preset --costs-preset names, else the deployment's default preset
    (retail unless configured); each cost option given overrides the preset's value."""
    cfg = config_of(ctx)
    bundle, kind, defaults = _bundle_of(strategy, strategy_name, engine)
    overrides = {"timeout_s": timeout, "memory_mb": memory_mb}
    given_costs = {"commission_bps": commission_bps, "slippage_bps": slippage_bps,
                   "commission_per_share": commission_per_share, "spread_bps": spread_bps,
                   "spread_model": spread_model, "borrow_bps": borrow_bps,
                   "impact_coefficient": impact_coefficient}
    try:
        limits = Limits.model_validate(
            {**cfg.limits.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
        )
        spec = BacktestSpec(
            dataset=dataset, version=data_version,
            universe=[s.strip() for s in symbols.split(",") if s.strip()],
            start=start.date(), end=end.date(), capital=capital,
            # Only the costs given: the rest come from the preset (a Costs field set to
            # its zero default here would override the preset's value).
            costs=Costs.model_validate({k: v for k, v in given_costs.items() if v is not None}),
            params={**defaults, **_parse_params(params)}, seed=seed, limits=limits,
            engine=EngineKind(kind),
            audit=not no_audit, audit_level=audit_level, stepped=stepped,
            benchmark=benchmark, universe_rule=universe_rule,
            # Unset unless asked for: the deployment's default preset applies.
            **({} if costs_preset is None else {"costs_preset": costs_preset}),
        )
    except ValidationError as exc:
        raise click.ClickException(_validation_message(exc)) from exc

    def notify(message: str) -> None:
        click.echo(message, err=True)

    if grid:  # a sweep: every combination of the --grid values, then the results table
        try:
            sweep, rows = run_sweep_embedded(cfg, spec, bundle, parse_grid(grid), notify=notify)
        except PitwallError as exc:
            raise click.ClickException(str(exc)) from exc
        print_results(sweep, rows, Stack.from_config(cfg))
        sys.exit(0 if all(r.status is JobStatus.COMPLETED for r in rows) else 1)
    stack = Stack.from_config(cfg)
    submitted = time.monotonic()

    def early(view: JobView) -> None:
        """The metrics as soon as they are committed, while the audit still runs (on
        stderr: stdout carries the final view, verdict included)."""
        click.echo(f"metrics ready after {time.monotonic() - submitted:.1f} s; the lookahead "
                   "audit is still running:", err=True)
        for label, text in _metric_rows(view):
            click.echo(f"  {label}  {text}", err=True)

    try:
        view = run_embedded(stack, spec, bundle, notify=notify,
                            on_metrics=None if as_json else early)
    except PitwallError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(view.model_dump_json(indent=2))
    else:
        _print_job(view, stack)
    if view.status is not JobStatus.COMPLETED:
        sys.exit(1)


def _bundle_of(path: Path, name: str | None, engine: str | None,
               ) -> tuple[bytes, str, dict[str, Any]]:
    """The bundle of a strategy file or notebook, its engine, and its default parameters."""
    try:
        if path.suffix == ".ipynb":
            built = bundle_notebook(load_notebook(path.read_bytes()), strategy=name)
            data, kind, defaults = built.data, built.kind, built.params
        else:
            source = path.read_text(encoding="utf-8", errors="replace")
            try:
                found, kind = detect_strategy(source, name, engine)
                entry = f"strategy.py:{found}"
            except NoStrategyError:  # made at run time, or a syntax error: the sandbox says
                entry, kind = "strategy.py", engine or "vectorized"
            data = build_bundle({"strategy.py": path.read_bytes()}, entrypoint=entry,
                                kind=kind)
            defaults = {}
    except BundleError as exc:
        raise click.ClickException(f"{path}: {exc}") from exc
    if engine is not None and engine != kind:
        raise click.ClickException(
            f"{path}: --engine {engine} does not fit its strategy, which runs on the {kind} "
            "engine (a "
            "@pitwall.vectorized function runs vectorized, a pitwall.Strategy subclass "
            "event); leave --engine out")
    return data, kind, defaults


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        parts.append(f"{where}: {err['msg']}")
    return "invalid backtest: " + "; ".join(parts)


def _reason(view: JobView) -> str:
    """The job's reason as one printable line: it may quote what the strategy printed."""
    return printable_line(view.reason or "")


def _state(view: JobView) -> str:
    """The job's status with the audit's verdict: a flagged run never reads as a success."""
    state = verdict(view.metrics)
    if state is None or state[0] != "flagged":
        return view.status.value
    return f"{view.status.value} ({state[1]})"


def _print_job(view: JobView, stack: Stack) -> None:
    click.echo(f"job {view.id}: {_state(view)}"
               + (f" — {_reason(view)}" if view.reason else ""))
    click.echo("costs preset: " + describe_preset(view.spec.costs_preset,
                                                  view.spec.default_costs_preset))
    if view.metrics is not None:
        for label, text in _metric_rows(view):
            click.echo(f"  {label}  {text}")
        if view.metrics.lookahead is not None:  # the audit's verdict, one sentence
            flagged = view.metrics.lookahead.status == "flagged"
            click.echo(("WARNING: " if flagged else "") + describe(view.metrics.lookahead))
        warning = cost_warning(view.metrics, view.spec.costs)
        if warning is not None:
            click.echo(f"warning: {warning}")
    artifacts = stack.store.artifacts(view.id)
    equity = artifacts.get("equity.parquet")
    if view.metrics is not None and equity is not None:
        _print_period(view, equity, stack.config)
    for name, label in (("report.html", "report"), ("log.txt", "log")):
        if name in artifacts:
            click.echo(f"{label}: {_location(artifacts[name]['uri'])}")
            break


def _metric_rows(view: JobView) -> list[tuple[str, str]]:
    """The metrics table's rows, labels padded to one width."""
    rows = format_metrics(view.metrics) if view.metrics is not None else []
    width = max((len(label) for label, _ in rows), default=0)
    return [(f"{label:<{width}}", text) for label, text in rows]


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
    """List recent jobs (of the data dir it names first, on stderr)."""
    cfg = config_of(ctx)
    stack = Stack.from_config(cfg)
    views = stack.store.list_jobs(status=JobStatus(status) if status else None, limit=limit)
    click.echo(f"jobs of {cfg.database_url if cfg.db_url else cfg.data_dir}"
               + ("" if views else ": none (another data dir? set PITWALL_DATA_DIR or "
                  "--data-dir)"), err=True)
    for view in views:
        sharpe = format_number(view.metrics.sharpe) if view.metrics else "-"
        click.echo(f"{view.id}  {_state(view):<9}  {view.created_at:%Y-%m-%d %H:%M:%S}  "
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
