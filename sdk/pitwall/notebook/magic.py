"""``%load_ext pitwall`` and the ``%%backtest`` cell magic.

``%%backtest --symbols AAPL,MSFT --start 2024-01-02 --end 2024-03-28 [--param fast=10]
[--costs-preset retail] [--commission-bps 1 --spread-bps 2 --slippage-bps 1 --borrow-bps 50
--impact-coefficient 1]`` runs the cell here (so its definitions exist in the kernel),
then submits it — plus the earlier top-level definitions it depends on (imports,
functions, constants) — as a strategy bundle to the Backtest API, and shows a live
panel. The kernel stays free.
A cell that only names a strategy defined in an earlier cell (its body is
``sma_crossover``) submits that strategy; the engine is its kind. The panel is the
cell's value, and :func:`last_backtest` returns it: ``run = last_backtest()`` in the
next cell, then ``run.job_id``.
Costs: the preset ``--costs-preset`` names, else the deployment's default preset
(``retail`` unless configured; ``--costs-preset frictionless`` for no costs at all), with
each cost option given overriding the preset's value (docs/engine-conventions.md §2.3).
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import shlex
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from pitwall.bundle import build_bundle
from pitwall.errors import BundleError
from pitwall.models import COSTS_PRESETS, BacktestSpec, Costs, EngineKind
from pitwall.notebook_bundle import detect_strategy, free_names
from pitwall.tracebacks import CellSpan

if TYPE_CHECKING:
    from pitwall.notebook.widget import BacktestPanel


#: The ``Costs`` fields ``%%backtest`` takes as numeric options (``--commission-bps`` …).
COST_OPTIONS = ("commission_bps", "commission_per_share", "spread_bps", "slippage_bps",
                "borrow_bps", "impact_coefficient")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="%%backtest", add_help=False, exit_on_error=False)
    p.add_argument("--symbols", required=True)
    p.add_argument("--start", required=True, type=dt.date.fromisoformat)
    p.add_argument("--end", required=True, type=dt.date.fromisoformat)
    p.add_argument("--dataset", default="sample")
    p.add_argument("--version", type=int, default=None)
    # No --engine: the strategy's kind decides (a pitwall.Strategy subclass is an event run).
    p.add_argument("--engine", choices=[e.value for e in EngineKind], default=None)
    p.add_argument("--param", action="append", default=[])
    p.add_argument("--capital", type=float, default=1_000_000.0)
    # None: not given, the preset's value (the deployment's default preset's, unless
    # --costs-preset names one).
    p.add_argument("--costs-preset", choices=list(COSTS_PRESETS), default=None)
    for name in COST_OPTIONS:
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=None)
    p.add_argument("--spread-model", choices=["fixed", "range"], default=None)
    p.add_argument("--seed", type=int, default=0)
    return p


def parse_spec(line: str, cell: str = "", bundled: str = "") -> BacktestSpec:
    """The BacktestSpec of a ``%%backtest`` line; ValueError with a usable message. Without
    ``--engine``, the engine is the kind of the strategy ``cell`` defines, else of the one
    in ``bundled`` (the cell with what it uses: a cell that only names a strategy defined
    earlier), vectorized when neither tells."""
    try:
        args = _parser().parse_args(shlex.split(line))
    except (argparse.ArgumentError, SystemExit) as exc:
        raise ValueError(f"%%backtest: {exc}; usage: %%backtest --symbols A,B --start "
                         "YYYY-MM-DD --end YYYY-MM-DD [--param name=value]") from exc
    params: dict[str, Any] = {}
    for item in args.param:
        key, sep, raw = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"%%backtest: --param {item!r}: write name=value")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    given = {name: getattr(args, name) for name in (*COST_OPTIONS, "spread_model")}
    try:
        # Only the costs given: a field set here overrides the preset's value.
        costs = Costs.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"--{'-'.join(str(e['loc'][0]).split('_'))}: {e['msg']}"
                             for e in exc.errors())
        raise ValueError(f"%%backtest: {problems}") from None
    return BacktestSpec(
        dataset=args.dataset, version=args.version,
        universe=[s.strip() for s in args.symbols.split(",") if s.strip()],
        start=args.start, end=args.end, engine=EngineKind(args.engine or _kind_of(cell, bundled)),
        capital=args.capital,
        costs=costs, params=params, seed=args.seed,
        **({} if args.costs_preset is None else {"costs_preset": args.costs_preset}),
    )


def _kind_of(cell: str, bundled: str = "") -> str:
    """The engine of the one strategy the cell defines (else the bundled source does), by
    the bundler's rule."""
    for source in (cell, bundled):
        try:
            return detect_strategy(source)[1]
        except BundleError:
            continue
    return EngineKind.VECTORIZED.value


def names_only(cell: str) -> list[str]:
    """The names a cell consists of, when it is only names (``sma_crossover``): such a
    ``%%backtest`` cell runs a strategy defined in an earlier cell; [] otherwise."""
    try:
        body = ast.parse(cell).body
    except SyntaxError:
        return []
    names = [s.value.id for s in body if isinstance(s, ast.Expr) and
             isinstance(s.value, ast.Name)]
    return names if body and len(names) == len(body) else []


def _defined(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    if isinstance(node, ast.Assign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


def _used(node: ast.stmt) -> set[str]:
    """The global names a statement reads, by the bundler's rule (a function's parameters
    and locals are not globals: a notebook's ``bars = client.bars(...)`` must not follow
    a strategy whose parameter is ``bars`` into the sandbox)."""
    return free_names(node)


def _statements(sources: list[tuple[int, str]]) -> list[tuple[int, ast.stmt]]:
    """The top-level statements of earlier inputs, each with its input's number."""
    out: list[tuple[int, ast.stmt]] = []
    for number, src in sources:
        # Magics and shell escapes become blank lines: the statements keep their line numbers.
        lines = ["" if ln.lstrip().startswith(("%", "!")) else ln for ln in src.splitlines()]
        try:
            out.extend((number, stmt) for stmt in ast.parse("\n".join(lines)).body)
        except SyntaxError:
            continue  # a cell that is not plain Python cannot be part of a strategy
    return out


def dependency_source(cell: str, history: list[str]) -> str:
    """The cell plus the earlier top-level statements that define what it uses."""
    return dependency_bundle(cell, list(enumerate(history, start=1)))[0]


def dependency_bundle(cell: str, history: list[tuple[int, str]]) -> tuple[str, list[CellSpan]]:
    """:func:`dependency_source` of ``(input number, source)`` pairs, with the cell map of
    the source: which lines came from which input (``In [n]``) and which are this cell."""
    body = ast.parse(cell).body
    wanted = set().union(*(_used(s) for s in body)) - set().union(*(_defined(s) for s in body))
    numbered = _statements(history)
    earlier = [stmt for _, stmt in numbered]
    # At run time a global resolves to its latest binding, so the latest definition wins.
    last: dict[str, int] = {}
    for index, stmt in enumerate(earlier):
        for name in _defined(stmt):
            last[name] = index
    keep: set[int] = set()
    todo = sorted(wanted)
    while todo:
        index = last.get(todo.pop(), -1)
        if index >= 0 and index not in keep:
            keep.add(index)
            todo.extend(_used(earlier[index]) - _defined(earlier[index]))
    parts: list[str] = []
    spans: list[CellSpan] = []
    line = 1
    pieces = [(f"In [{numbered[i][0]}]", ast.unparse(earlier[i]), earlier[i].lineno - 1)
              for i in sorted(keep)]
    lead = cell[: len(cell) - len(cell.lstrip())].count("\n")
    for label, text, offset in [*pieces, ("this cell", cell.strip(), lead)]:
        n_lines = text.count("\n") + 1
        spans.append(CellSpan(label=label, first_line=line, n_lines=n_lines,
                              line_offset=offset))
        parts.append(text)
        line += n_lines + 1  # the blank line between pieces
    return "\n\n".join(parts) + "\n", spans


def backtest_magic(shell: Any, line: str, cell: str) -> Any:
    """Implementation of ``%%backtest`` (registered by ``load_ipython_extension``)."""
    from pitwall.notebook.client import Client
    from pitwall.notebook.widget import BacktestPanel

    parse_spec(line, cell)  # a bad line is refused before the cell runs
    named = names_only(cell)
    if named:  # the strategy is defined earlier: nothing to run (nor to echo) here
        missing = [name for name in named if name not in shell.user_ns]
        if missing:
            raise NameError(f"%%backtest: {', '.join(missing)} is not defined; run the cell "
                            "that defines the strategy first")
    elif not shell.run_cell(cell, store_history=False).success:
        return None
    history = list(shell.history_manager.input_hist_raw[:-1])
    source, spans = dependency_bundle(cell, [(n, h) for n, h in enumerate(history)
                                             if n > 0 and not h.lstrip().startswith("%%")])
    spec = parse_spec(line, cell, source)
    bundle = build_bundle({"strategy.py": source}, entrypoint="strategy.py",
                          kind=spec.engine.value)
    client = Client()
    job_id = client.submit(bundle, spec)
    panel = BacktestPanel(client, job_id, cells=spans).start()
    _panels[:] = [panel]  # only the latest: a kernel may run hundreds of cells
    return panel


#: The panel of this kernel's latest ``%%backtest`` cell (none before the first).
_panels: list[BacktestPanel] = []


def last_backtest() -> BacktestPanel:
    """The panel of this kernel's latest ``%%backtest`` cell; its ``job_id`` names the job
    (``pitwall.Client().wait(last_backtest().job_id)``)."""
    if not _panels:
        raise LookupError("no %%backtest cell has submitted a run in this kernel yet")
    return _panels[-1]


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext pitwall``: register ``%%backtest``."""
    shell.register_magic_function(
        lambda line, cell: backtest_magic(shell, line, cell), magic_kind="cell",
        magic_name="backtest",
    )
