"""Notebook → strategy bundle: the one rule the Run Backtest button, ``pitwall run
NOTEBOOK.ipynb``, :meth:`pitwall.Client.submit_notebook` and ``POST /v1/backtests`` (a
``notebook`` part) all use. Documented for researchers in docs/notebooks.md.

The rule: run the notebook's strategy, whatever cell is active.

1. The **strategy** is the one top-level function decorated with ``@pitwall.vectorized``
   or the one ``pitwall.Strategy`` subclass in the notebook's code cells. None, two, or
   one name defined twice is refused before anything is submitted, with what to do: tag
   the cell to run ``pitwall:strategy``, tag the others ``pitwall:skip``, or name the
   strategy (``pitwall run --strategy``, ``strategy=`` in Python).
2. The bundle holds the strategy's definition plus every top-level statement it depends
   on **by name**, transitively (imports, helper functions, constants), found with
   :mod:`ast`: a name used by a kept statement brings every statement of the notebook that
   binds it. Statements that only run things here (a quick ``pitwall.backtest`` run, a
   ``Client``, plots, ``display``) and whatever is computed from them are never kept.
   Cells are taken in notebook order, so the bundle means what the notebook means after
   Run All.
3. Tags: ``pitwall:skip`` leaves a cell out entirely; ``pitwall:params`` marks the cell
   holding the default parameters (one ``params = {dict literal}``, read as data, never
   run); ``pitwall:strategy`` picks the strategy's cell when there are several.
4. IPython syntax: display-only line magics (``%matplotlib``…) are ignored; a cell
   magic other than ``%%backtest`` (whose body is Python) makes the cell local-only; a
   cell holding code the strategy needs cannot also hold another magic or a shell escape
   (refused, naming cell and line: it would run something the sandbox cannot).
5. ``strategy.py`` is the kept statements in notebook order, each cell under a
   ``# --- cell N (id)`` line and at its own line numbers (what stays out is blank); the
   bundle manifest's ``cell_lines`` maps each line back to its notebook cell (number, id)
   and line there, so a traceback names the cell (:mod:`pitwall.tracebacks`).
"""

from __future__ import annotations

import ast
import builtins
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from pitwall.bundle import build_bundle
from pitwall.errors import BundleError

DOCS = "docs/notebooks.md"
SKIP_TAG = "pitwall:skip"
PARAMS_TAG = "pitwall:params"
STRATEGY_TAG = "pitwall:strategy"
#: Line magics that only change the notebook's display or reloading: ignored.
DROPPABLE_MAGICS = frozenset({
    "matplotlib", "load_ext", "reload_ext", "config", "autoreload", "aimport", "precision",
    "pprint", "xmode", "colors",
})
#: A cell magic whose body is the strategy's Python (``%%backtest`` submits it).
PYTHON_CELL_MAGICS = frozenset({"backtest"})
#: Calls that run something here, in the kernel: a top-level statement calling one of
#: these (as ``f(...)`` or ``x.f(...)``) is local-only, never bundled.
LOCAL_CALLS = frozenset({
    "backtest", "Client", "display", "show", "plot", "figure", "savefig", "subplots",
    "imshow", "hist", "scatter", "sweep", "run_embedded", "run_sweep_embedded", "wait",
    "submit", "submit_notebook", "BacktestPanel",
})
_BUILTINS = frozenset(dir(builtins)) | {"__name__", "__file__", "__doc__"}
MAX_NOTEBOOK_BYTES = 16 * 1024 * 1024


class NotebookBundleError(BundleError):
    """The notebook cannot be bundled. ``cell`` is the 1-based position of the cell at
    fault among all cells (None when no one cell is: no strategy, two strategies)."""

    def __init__(self, cell: int | None, message: str, cell_id: str | None = None) -> None:
        text = message if cell is None else f"cell {cell}: {message}"
        if DOCS not in text:
            text += f" (the rule: {DOCS})"
        super().__init__(text)
        self.cell = cell
        self.cell_id = cell_id
        self.reason = message


class NoStrategyError(BundleError):
    """A ``.py`` file has no top-level strategy definition the rule can see (none, or it
    does not parse: the sandbox then reports the error with its traceback)."""


@dataclass(frozen=True)
class CellPreview:
    """What happens to one cell: ``role`` is strategy, dependency, params, skipped (tag),
    local (only runs things here), unused (nothing of it is needed), markdown, raw, or
    invalid (not Python); ``lines`` are the cell's lines that go in (1-based, inclusive)."""

    index: int
    id: str | None
    role: str
    reason: str
    lines: list[list[int]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NotebookPlan:
    """Which strategy runs, with which engine, and what every cell contributes."""

    strategy: str
    kind: str
    params: dict[str, Any]
    cells: list[CellPreview]
    unresolved: list[str]

    @property
    def included(self) -> list[CellPreview]:
        return [c for c in self.cells if c.role in ("strategy", "dependency")]

    def to_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "kind": self.kind, "params": self.params,
                "unresolved": self.unresolved, "cells": [asdict(c) for c in self.cells],
                "docs": DOCS}


@dataclass
class NotebookBundle:
    """The bundle built from a notebook, and what went into it."""

    data: bytes
    plan: NotebookPlan
    source: str
    cell_lines: list[dict[str, Any]]

    @property
    def params(self) -> dict[str, Any]:
        return self.plan.params

    @property
    def kind(self) -> str:
        return self.plan.kind

    @property
    def cell_ids(self) -> list[str]:
        return [c.id or str(c.index + 1) for c in self.plan.included]


@dataclass
class _Stmt:
    cell: int  # 0-based index among all cells
    cell_id: str | None
    node: ast.stmt
    first: int  # first line in the cell (decorators included), 1-based
    last: int
    defines: set[str]
    uses: set[str]
    local: bool = False


@dataclass
class _Cell:
    index: int
    cell_id: str | None
    role: str = ""
    reason: str = ""
    lines: list[str] = field(default_factory=list)
    masked: list[str] = field(default_factory=list)
    runs: dict[int, str] = field(default_factory=dict)  # line → the magic or shell escape
    stmts: list[_Stmt] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)


def load_notebook(data: bytes | str) -> dict[str, Any]:
    """Parse an ``.ipynb`` (nbformat 4 JSON); :class:`BundleError` saying what is wrong."""
    if len(data) > MAX_NOTEBOOK_BYTES:
        raise BundleError(f"the notebook is {len(data)} bytes; the limit is "
                          f"{MAX_NOTEBOOK_BYTES} bytes. Clear its outputs and try again")
    try:
        book = json.loads(data)
    except ValueError as exc:
        raise BundleError(f"not a notebook: the file is not JSON ({exc}); pass an .ipynb "
                          "saved by Jupyter") from exc
    if not isinstance(book, dict) or not isinstance(book.get("cells"), list):
        raise BundleError("not a notebook: it has no list of cells (nbformat 4 JSON expected)")
    return book


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tags(cell: dict[str, Any]) -> set[str]:
    meta = cell.get("metadata")
    tags = meta.get("tags", []) if isinstance(meta, dict) else []
    return {str(t) for t in tags} if isinstance(tags, list) else set()


def _is_shell_assignment(line: str) -> bool:
    # ``files = !ls`` is IPython's shell-capture assignment.
    head, sep, tail = line.partition("=")
    return bool(sep) and head.strip().isidentifier() and tail.lstrip().startswith("!")


def _mask_ipython(lines: list[str]) -> tuple[list[str], dict[int, str]]:
    """The lines with IPython syntax blanked (line numbers kept), and the masked lines
    that would run something (1-based line → what it is); display-only magics vanish."""
    out: list[str] = []
    masked: dict[int, str] = {}
    for number, line in enumerate(lines, 1):
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if stripped.startswith("%"):
            name = stripped.lstrip("%").split(maxsplit=1)[0] if stripped.strip("%") else ""
            if name not in DROPPABLE_MAGICS:
                masked[number] = f"magics (%{name})"
            out.append(indent + "pass" if indent else "")
        elif stripped.startswith("!") or _is_shell_assignment(stripped):
            masked[number] = "shell escapes (!cmd)"
            out.append(indent + "pass" if indent else "")
        else:
            out.append(line)
    return out, masked


def _call_name(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _bound(node: ast.stmt) -> set[str]:
    """The global names a top-level statement binds (not those of nested scopes)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return {node.name}
    if isinstance(node, ast.Import | ast.ImportFrom):
        return {(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"}
    out: set[str] = set()
    todo: list[ast.AST] = [node]
    while todo:
        sub = todo.pop()
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store | ast.Del):
            out.add(sub.id)
        elif isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(sub.name)
            continue
        elif isinstance(sub, ast.Import | ast.ImportFrom):
            out.update((a.asname or a.name).split(".")[0] for a in sub.names)
        elif isinstance(sub, ast.Lambda | ast.ListComp | ast.SetComp | ast.DictComp
                        | ast.GeneratorExp):
            continue
        todo.extend(ast.iter_child_nodes(sub))
    return out


def free_names(node: ast.stmt) -> set[str]:
    """The names a statement reads that it does not bind itself (an over-approximation
    of its free globals: any name it stores anywhere, or takes as a parameter, is local)."""
    loads: set[str] = set()
    local: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            (loads if isinstance(sub.ctx, ast.Load) else local).add(sub.id)
        elif isinstance(sub, ast.arg):
            local.add(sub.arg)
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        local.discard(node.name)
    return loads - local - _BUILTINS


def _runs_locally(node: ast.stmt) -> bool:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
                  | ast.Import | ast.ImportFrom):
        return False
    return any(isinstance(sub, ast.Call) and _call_name(sub) in LOCAL_CALLS
               for sub in ast.walk(node))


def _decorator_is(expr: ast.expr, name: str) -> bool:
    target = expr.func if isinstance(expr, ast.Call) else expr
    return (isinstance(target, ast.Name) and target.id == name) or \
        (isinstance(target, ast.Attribute) and target.attr == name)


def strategy_kind(node: ast.stmt, bases: frozenset[str] = frozenset()) -> str | None:
    """``vectorized`` for a ``@pitwall.vectorized`` function, ``event`` for a subclass of
    ``pitwall.Strategy`` (or of one of ``bases``, strategy classes defined alongside),
    None for anything else."""
    if isinstance(node, ast.FunctionDef) and any(_decorator_is(d, "vectorized")
                                                 for d in node.decorator_list):
        return "vectorized"
    if isinstance(node, ast.ClassDef) and any(
            _decorator_is(b, "Strategy") or (isinstance(b, ast.Name) and b.id in bases)
            for b in node.bases):
        return "event"
    return None


def _strategies(nodes: list[ast.stmt]) -> list[tuple[ast.stmt, str]]:
    """The strategy definitions among ``nodes``: a subclass of a strategy class defined
    there is one too (so a base and its subclass are two, never a silent pick)."""
    bases: set[str] = set()
    while True:
        found = [(n, k) for n in nodes if (k := strategy_kind(n, frozenset(bases)))]
        names = {n.name for n, k in found if k == "event" and isinstance(n, ast.ClassDef)}
        if names <= bases:
            return found
        bases |= names


def _parse_code(cell: _Cell, src: str) -> None:
    """Split a code cell into top-level statements, or say why it has none to offer."""
    lines = src.splitlines()
    first = lines[0].lstrip()
    if first.startswith("%%"):
        magic = first[2:].split(maxsplit=1)[0] if len(first) > 2 else ""
        if magic not in PYTHON_CELL_MAGICS:
            cell.role, cell.reason = "local", f"cell magic %%{magic} runs here only"
            return
        lines = ["", *lines[1:]]  # the body is Python; line numbers stay the cell's
    cell.lines = lines
    cell.masked, cell.runs = _mask_ipython(lines)
    try:
        tree = ast.parse("\n".join(cell.masked))
    except SyntaxError as exc:
        cell.role = "invalid"
        cell.reason = f"invalid Python at line {exc.lineno}: {exc.msg}"
        return
    for node in tree.body:
        start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        end = node.end_lineno or node.lineno
        cell.stmts.append(_Stmt(cell.index, cell.cell_id, node, start, end, _bound(node),
                                free_names(node), _runs_locally(node)))
    if cell.runs and not cell.stmts:
        cell.role, cell.reason = "local", "only magics or shell escapes"


def _read_cells(notebook: dict[str, Any]) -> tuple[list[_Cell], dict[str, Any]]:
    raw_cells = notebook.get("cells")
    if not isinstance(raw_cells, list):
        raise BundleError("not a notebook: it has no list of cells")
    cells: list[_Cell] = []
    params: dict[str, Any] = {}
    for index, raw in enumerate(raw_cells):
        if not isinstance(raw, dict):
            raise BundleError(f"not a notebook: cell {index + 1} is not an object")
        cid = raw.get("id")
        cell = _Cell(index, str(cid) if cid is not None else None, tags=_tags(raw))
        cells.append(cell)
        kind = raw.get("cell_type")
        src = _source(raw)
        if kind != "code":
            cell.role, cell.reason = str(kind or "raw"), "not code"
            continue
        if SKIP_TAG in cell.tags:
            cell.role, cell.reason = "skipped", f"tagged {SKIP_TAG}"
            continue
        if PARAMS_TAG in cell.tags:
            params = read_params(src, index + 1, cell.cell_id)
            cell.role, cell.reason = "params", f"tagged {PARAMS_TAG}: default parameters"
            continue
        if not src.strip():
            cell.role, cell.reason = "unused", "empty"
            continue
        _parse_code(cell, src)
    return cells, params


def _mark_local(stmts: list[_Stmt]) -> None:
    """A statement reading a name only local statements bind is local too (transitively)."""
    changed = True
    while changed:
        changed = False
        plain = {n for s in stmts if not s.local for n in s.defines}
        local_names = {n for s in stmts if s.local for n in s.defines} - plain
        for s in stmts:
            if not s.local and not isinstance(s.node, ast.FunctionDef | ast.AsyncFunctionDef
                                              | ast.ClassDef) and s.uses & local_names:
                s.local = True
                changed = True


def _pick_strategy(stmts: list[_Stmt], cells: list[_Cell], name: str | None) -> _Stmt:
    marked = {id(node) for node, _ in _strategies([s.node for s in stmts])}
    found = [s for s in stmts if id(s.node) in marked]
    if name is not None:
        named = [s for s in found if name in s.defines]
        if not named:
            others = ", ".join(sorted({n for s in found for n in s.defines})) or "none"
            raise NotebookBundleError(None, f"no strategy named {name!r} in the notebook "
                                      f"(strategies found: {others})")
        found = named
    else:
        tagged = [s for s in found if STRATEGY_TAG in cells[s.cell].tags]
        if tagged:
            found = tagged
    if not found:
        raise NotebookBundleError(None, "the notebook has no strategy: write a function "
                                  "decorated with @pitwall.vectorized, or a subclass of "
                                  "pitwall.Strategy, at the top level of a code cell")
    if len(found) > 1:
        where = ", ".join(f"{_name(s)} in cell {s.cell + 1}" for s in found)
        raise NotebookBundleError(None, f"the notebook defines {len(found)} strategies "
                                  f"({where}); run one: tag its cell {STRATEGY_TAG}, tag the "
                                  f"others {SKIP_TAG}, or name it (pitwall run --strategy "
                                  "NAME, strategy= in Python)")
    return found[0]


def _name(stmt: _Stmt) -> str:
    node = stmt.node
    return node.name if isinstance(node, ast.FunctionDef | ast.ClassDef) else "?"


def _plan(notebook: dict[str, Any], strategy: str | None,
          ) -> tuple[NotebookPlan, list[_Stmt], list[_Cell]]:
    cells, params = _read_cells(notebook)
    stmts = [s for c in cells for s in c.stmts]
    _mark_local(stmts)
    target = _pick_strategy(stmts, cells, strategy)
    binders: dict[str, list[_Stmt]] = {}
    for s in stmts:
        if not s.local:
            for n in s.defines:
                binders.setdefault(n, []).append(s)
    keep: dict[int, _Stmt] = {id(target): target}
    todo = [target]
    unresolved: set[str] = set()
    while todo:
        for name in sorted(todo.pop().uses):
            if name not in binders:
                unresolved.add(name)
            for s in binders.get(name, []):
                if id(s) not in keep:
                    keep[id(s)] = s
                    todo.append(s)
    kept = sorted(keep.values(), key=lambda s: (s.cell, s.first))
    for index in sorted({s.cell for s in kept}):
        cell = cells[index]
        if cell.runs:  # a magic or shell escape in a cell the strategy needs
            line, what = min(cell.runs.items())
            raise NotebookBundleError(
                index + 1, f"line {line}: {what} cannot run in the sandbox, and this cell "
                f"holds code the strategy needs; move line {line} to a cell of its own (it "
                f"then stays out) or tag that cell {SKIP_TAG}", cell.cell_id)
    invalid = [c for c in cells if c.role == "invalid"]
    if unresolved and invalid:
        c = invalid[0]
        raise NotebookBundleError(c.index + 1, f"{c.reason}; the strategy uses "
                                  f"{', '.join(sorted(unresolved))}, which no valid cell "
                                  f"defines: fix the cell or tag it {SKIP_TAG}", c.cell_id)
    previews = _previews(cells, kept, target)
    kind = "event" if isinstance(target.node, ast.ClassDef) else "vectorized"
    plan = NotebookPlan(strategy=_name(target), kind=kind, params=params, cells=previews,
                        unresolved=sorted(unresolved))
    return plan, kept, cells


def _previews(cells: list[_Cell], kept: list[_Stmt], target: _Stmt) -> list[CellPreview]:
    by_cell: dict[int, list[_Stmt]] = {}
    for s in kept:
        by_cell.setdefault(s.cell, []).append(s)
    out: list[CellPreview] = []
    for c in cells:
        mine = by_cell.get(c.index)
        if mine:
            names = sorted({n for s in mine for n in s.defines})
            role = "strategy" if c.index == target.cell else "dependency"
            reason = (f"defines the strategy {_name(target)}" if role == "strategy"
                      else f"defines {', '.join(names)}")
            dropped = len(c.stmts) - len(mine)
            if dropped:
                reason += f"; {dropped} other statement(s) of it stay out"
            lines = [[s.first, s.last] for s in mine]
            out.append(CellPreview(c.index, c.cell_id, role, reason, lines, names))
        elif c.role:
            out.append(CellPreview(c.index, c.cell_id, c.role, c.reason))
        elif c.stmts and all(s.local for s in c.stmts):
            out.append(CellPreview(c.index, c.cell_id, "local", "runs things here only "
                                   "(a quick run, a plot, display)"))
        else:
            out.append(CellPreview(c.index, c.cell_id, "unused",
                                   "the strategy uses nothing it defines"))
    return out


def plan_notebook(notebook: dict[str, Any], *, strategy: str | None = None) -> NotebookPlan:
    """What :func:`bundle_notebook` would bundle: the preview the Run Backtest dialog shows.
    Raises :class:`NotebookBundleError` when the choice is ambiguous or impossible."""
    return _plan(notebook, strategy)[0]


def bundle_notebook(notebook: dict[str, Any], *, strategy: str | None = None,
                    active_cell: int | None = None) -> NotebookBundle:
    """Build a strategy bundle from a notebook (nbformat 4 JSON) by the rule above.

    ``active_cell`` is accepted and ignored: the bundle never depends on which cell is
    active. ``strategy`` names the strategy when the notebook holds several.
    """
    del active_cell
    plan, kept, cells = _plan(notebook, strategy)
    by_cell: dict[int, list[_Stmt]] = {}
    for s in kept:
        by_cell.setdefault(s.cell, []).append(s)
    out: list[str] = []
    cell_lines: list[dict[str, Any]] = []
    for index, stmts in sorted(by_cell.items()):
        cell = cells[index]
        if out:
            out.append("")
        out.append(f"# --- cell {index + 1}" + (f" ({cell.cell_id})" if cell.cell_id else ""))
        # The cell's lines at their own positions (what stays out is blanked), so line k
        # of the cell is line k after its marker: the map is one span per cell.
        keep = {n for s in stmts for n in range(s.first, s.last + 1)}
        last = max(s.last for s in stmts)
        first_line = len(out) + 1
        out.extend(line if n in keep else "" for n, line in enumerate(cell.masked[:last], 1))
        cell_lines.append({"label": f"cell {index + 1}", "first_line": first_line,
                           "n_lines": last, "cell_id": cell.cell_id, "number": index + 1,
                           "file": "strategy.py"})
    source = "\n".join(out) + "\n"
    try:
        ast.parse(source)
    except SyntaxError as exc:  # cannot happen for whole top-level statements; be clear
        raise NotebookBundleError(None, f"the bundled code is not valid Python at line "
                                  f"{exc.lineno}: {exc.msg}; keep the strategy's code in "
                                  "plain top-level statements") from exc
    ids = [c.id or str(c.index + 1) for c in plan.included]
    data = build_bundle({"strategy.py": source}, entrypoint=f"strategy.py:{plan.strategy}",
                        kind=plan.kind, source_cells=ids, cell_lines=cell_lines)
    return NotebookBundle(data=data, plan=plan, source=source, cell_lines=cell_lines)


def locate(cell_lines: list[dict[str, Any]], line: int) -> tuple[int, str | None, int] | None:
    """The notebook cell (0-based index, id) and line there of ``strategy.py``'s ``line``."""
    for span in cell_lines:
        if span["first_line"] <= line < span["first_line"] + span["n_lines"]:
            return int(span["number"]) - 1, span["cell_id"], line - span["first_line"] + 1
    return None


def detect_strategy(source: str, strategy: str | None = None, kind: str | None = None,
                    ) -> tuple[str, str]:
    """The strategy of a ``.py`` file by the same rule: ``(name, kind)``; refused (with
    what to do) when the file has none or several (of ``kind``, when given)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise NoStrategyError(f"the strategy file is not valid Python: line {exc.lineno}: "
                              f"{exc.msg}") from exc
    found = [(n.name, k) for n, k in _strategies(tree.body)
             if isinstance(n, ast.FunctionDef | ast.ClassDef)]
    if kind is not None:
        found = [f for f in found if f[1] == kind] or found
    if strategy is not None:
        found = [f for f in found if f[0] == strategy]
        if not found:
            raise BundleError(f"the file defines no strategy named {strategy!r} (a "
                              "@pitwall.vectorized function or a pitwall.Strategy subclass)")
    if not found:
        raise NoStrategyError("the file has no strategy: write a function decorated with "
                          "@pitwall.vectorized or a subclass of pitwall.Strategy at its top "
                          "level")
    if len({name for name, _ in found}) > 1:
        names = ", ".join(name for name, _ in found)
        raise BundleError(f"the file defines several strategies ({names}); name the one to "
                          "run (pitwall run --strategy NAME)")
    return found[-1]


def read_params(src: str, number: int, cell_id: str | None = None) -> dict[str, Any]:
    """The parameters of a ``pitwall:params`` cell: one ``name = {dict literal}``."""
    try:
        tree = ast.parse(src)
    except SyntaxError as exc:
        raise NotebookBundleError(number, f"parameters cell is not valid Python: {exc.msg}",
                                  cell_id) from exc
    body = [n for n in tree.body if not isinstance(n, ast.Expr)]
    if len(body) != 1 or not isinstance(body[0], ast.Assign) or len(body[0].targets) != 1:
        raise NotebookBundleError(number, "a parameters cell holds one assignment, e.g. "
                                  'params = {"fast": 10, "slow": 50}', cell_id)
    try:
        value = ast.literal_eval(body[0].value)
    except ValueError as exc:
        raise NotebookBundleError(number, "parameters must be literals (numbers, strings, "
                                  "booleans, lists), not expressions", cell_id) from exc
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise NotebookBundleError(number, "parameters must be a dict with string keys", cell_id)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise NotebookBundleError(number, f"parameters must be JSON data: {exc}",
                                  cell_id) from exc
    return value


def params_of(notebook: dict[str, Any]) -> dict[str, Any]:
    """The default parameters of the notebook's ``pitwall:params`` cell ({} without one)."""
    for index, cell in enumerate(notebook.get("cells", [])):
        if isinstance(cell, dict) and PARAMS_TAG in _tags(cell) and \
                cell.get("cell_type") == "code":
            return read_params(_source(cell), index + 1, cell.get("id"))
    return {}
