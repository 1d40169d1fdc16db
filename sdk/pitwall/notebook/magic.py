"""``%load_ext pitwall`` and the ``%%backtest`` cell magic.

``%%backtest --symbols AAPL,MSFT --start 2024-01-02 --end 2024-03-28 [--param fast=10]``
runs the cell here (so its definitions exist in the kernel), then submits it — plus the
earlier top-level definitions it depends on (imports, functions, constants) — as a
strategy bundle to the Backtest API, and shows a live panel. The kernel stays free.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import shlex
from typing import Any

from pitwall.bundle import build_bundle
from pitwall.models import BacktestSpec, Costs, EngineKind


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="%%backtest", add_help=False, exit_on_error=False)
    p.add_argument("--symbols", required=True)
    p.add_argument("--start", required=True, type=dt.date.fromisoformat)
    p.add_argument("--end", required=True, type=dt.date.fromisoformat)
    p.add_argument("--dataset", default="sample")
    p.add_argument("--version", type=int, default=None)
    p.add_argument("--engine", choices=[e.value for e in EngineKind], default="vectorized")
    p.add_argument("--param", action="append", default=[])
    p.add_argument("--capital", type=float, default=1_000_000.0)
    p.add_argument("--commission-bps", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    return p


def parse_spec(line: str) -> BacktestSpec:
    """The BacktestSpec of a ``%%backtest`` line; ValueError with a usable message."""
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
    return BacktestSpec(
        dataset=args.dataset, version=args.version,
        universe=[s.strip() for s in args.symbols.split(",") if s.strip()],
        start=args.start, end=args.end, engine=EngineKind(args.engine), capital=args.capital,
        costs=Costs(commission_bps=args.commission_bps), params=params, seed=args.seed,
    )


def _defined(node: ast.stmt) -> set[str]:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    if isinstance(node, ast.Assign | ast.AnnAssign):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return set()


def _used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and
            isinstance(n.ctx, ast.Load)}


def _statements(sources: list[str]) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for src in sources:
        lines = [ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!"))]
        try:
            out.extend(ast.parse("\n".join(lines)).body)
        except SyntaxError:
            continue  # a cell that is not plain Python cannot be part of a strategy
    return out


def dependency_source(cell: str, history: list[str]) -> str:
    """The cell plus the earlier top-level statements that define what it uses."""
    body = ast.parse(cell).body
    wanted = set().union(*(_used(s) for s in body)) - set().union(*(_defined(s) for s in body))
    earlier = _statements(history)
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
    picked = [ast.unparse(earlier[i]) for i in sorted(keep)]
    return "\n\n".join([*picked, cell.strip()]) + "\n"


def backtest_magic(shell: Any, line: str, cell: str) -> Any:
    """Implementation of ``%%backtest`` (registered by ``load_ipython_extension``)."""
    from pitwall.notebook.client import Client
    from pitwall.notebook.widget import BacktestPanel

    spec = parse_spec(line)
    result = shell.run_cell(cell, store_history=False)
    if not result.success:
        return None
    history = list(shell.history_manager.input_hist_raw[1:-1])
    source = dependency_source(cell, [h for h in history if not h.lstrip().startswith("%%")])
    bundle = build_bundle({"strategy.py": source}, entrypoint="strategy.py",
                          kind=spec.engine.value)
    client = Client()
    job_id = client.submit(bundle, spec)
    return BacktestPanel(client, job_id).start()


def load_ipython_extension(shell: Any) -> None:
    """``%load_ext pitwall``: register ``%%backtest``."""
    shell.register_magic_function(
        lambda line, cell: backtest_magic(shell, line, cell), magic_kind="cell",
        magic_name="backtest",
    )
