"""The import graph of Pitwall's three packages, read from the source with ``ast``.

Every ``import`` counts, wherever it is: at module level, inside a function (a deferred
import still runs when the function does) and under ``TYPE_CHECKING`` (a type-only
import is still a dependency a reader has to follow). ``from pkg import name`` resolves
to the submodule ``pkg.name`` when there is one, else to ``pkg`` itself; relative
imports resolve against the importing module's package. Imports of anything outside the
three packages are kept by their top-level name (``plotly``, ``httpx``, ...).

Used by tests/test_layers.py (cycles, layer order) and
tests/sdk/test_import_contract.py (what the sandbox side may load).
"""

from __future__ import annotations

import ast
import gc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Each package of the project and the folder that holds it.
PACKAGES = {
    "pitwall": REPO / "sdk" / "pitwall",
    "pitwall_executor": REPO / "executor" / "pitwall_executor",
    "pitwall_server": REPO / "server_extension" / "pitwall_server",
}


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``source`` imports ``target`` at ``line``."""

    source: str
    target: str
    line: int
    deferred: bool  # inside a function body: runs when the function does
    type_only: bool  # under ``if TYPE_CHECKING:``: never runs

    @property
    def internal(self) -> bool:
        return self.target.split(".")[0] in PACKAGES

    def where(self) -> str:
        kind = ", type-only" if self.type_only else ", deferred" if self.deferred else ""
        return f"{self.source} -> {self.target} ({module_path(self.source)}:{self.line}{kind})"


@cache
def modules() -> dict[str, Path]:
    """Every module of the three packages (packages by their ``__init__.py``)."""
    found: dict[str, Path] = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = [package, *rel.parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def module_path(name: str) -> str:
    return str(modules()[name].relative_to(REPO))


def _is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _resolve(name: str) -> str:
    """``name`` as the longest known module it starts with, or its top-level name."""
    known = modules()
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return parts[0]
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return parts[0]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Visitor(ast.NodeVisitor):
    def __init__(self, module: str) -> None:
        self.module = module
        self.edges: list[Import] = []
        self._depth = 0  # functions we are inside
        self._type_only = 0  # TYPE_CHECKING blocks we are inside

    def _add(self, target: str, line: int) -> None:
        self.edges.append(Import(self.module, _resolve(target), line, self._depth > 0,
                                 self._type_only > 0))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._type_only += 1
            for child in node.body:
                self.visit(child)
            self._type_only -= 1
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = self._base(node)
        for alias in node.names:
            full = f"{base}.{alias.name}" if base else alias.name
            # `from pkg import sub` imports the submodule; `from pkg import name`, pkg.
            target = full if full in modules() else base
            self._add(target, node.lineno)

    def visit_Call(self, node: ast.Call) -> None:
        # importlib.import_module("pitwall.x") with a literal name is an import too.
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if (name == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            self._add(node.args[0].value, node.lineno)
        self.generic_visit(node)

    def _base(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        package = self.module if _is_package(self.module) else self.module.rpartition(".")[0]
        parts = package.split(".")
        parts = parts[: len(parts) - (node.level - 1)]
        return ".".join([*parts, node.module] if node.module else parts)


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    """Every import of ``module``, in source order."""
    path = modules()[module]
    visitor = _Visitor(module)
    visitor.visit(_parse(path))
    return tuple(visitor.edges)


def _parse(path: Path) -> ast.Module:
    """``ast.parse``, safe beside other threads of the test process.

    Python 3.11 keeps the counter that guards its C-to-Python AST conversion in state
    shared by every thread (CPython issue 106905). When another thread
    parses at the same moment -- 3.11's ``traceback`` parses the failing line of every
    traceback it formats, so a background thread logging an exception is enough -- the
    conversion raises ``SystemError: AST constructor recursion depth mismatch`` for a
    file that is fine. The collector is paused so that no finalizer hands the GIL over
    mid-conversion, and the rare clash left is parsed again.
    """
    source = path.read_text()
    for attempt in range(3):
        paused = gc.isenabled()
        gc.disable()
        try:
            return ast.parse(source, filename=str(path))
        except SystemError as error:
            if "recursion depth mismatch" not in str(error) or attempt == 2:
                raise
        finally:
            if paused:
                gc.enable()
    raise AssertionError("unreachable")


def internal_edges(*, type_only: bool = True) -> Iterator[Import]:
    """Every import from one project module to another (not to itself)."""
    for module in modules():
        for edge in imports_of(module):
            if edge.internal and edge.target != module and (type_only or not edge.type_only):
                yield edge


def graph(edges: Iterable[Import]) -> dict[str, dict[str, Import]]:
    """``source -> {target: the first import of it}``."""
    out: dict[str, dict[str, Import]] = {m: {} for m in modules()}
    for edge in edges:
        out[edge.source].setdefault(edge.target, edge)
    return out


def cycles(adjacency: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in adjacency.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(adjacency):
        if node not in index:
            visit(node)
    return sorted(found)


def cycle_path(adjacency: dict[str, dict[str, Import]], members: list[str]) -> list[Import]:
    """One closed chain of imports through the first module of a cycle."""
    inside = set(members)
    start = members[0]
    # Breadth-first from start's successors back to start, inside the component.
    parents: dict[str, Import] = {}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt, edge in sorted(adjacency[node].items()):
            if nxt not in inside or nxt in parents:
                continue
            parents[nxt] = edge
            if nxt == start:
                chain = [edge]
                while chain[0].source != start:
                    chain.insert(0, parents[chain[0].source])
                return chain
            queue.append(nxt)
    return []


def chain_to(adjacency: dict[str, dict[str, Import]], start: str,
             wanted: set[str]) -> list[Import] | None:
    """The shortest chain of imports from ``start`` to a module in ``wanted``, if any.

    ``wanted`` may hold top-level names of outside packages (``"plotly"``).
    """
    parents: dict[str, Import] = {}
    queue = [start]
    seen = {start}
    while queue:
        node = queue.pop(0)
        for nxt, edge in sorted(adjacency.get(node, {}).items()):
            if nxt in seen:
                continue
            seen.add(nxt)
            parents[nxt] = edge
            if nxt in wanted or nxt.split(".")[0] in wanted or any(
                    nxt.startswith(w + ".") for w in wanted):
                chain = [edge]
                while chain[0].source != start:
                    chain.insert(0, parents[chain[0].source])
                return chain
            queue.append(nxt)
    return None
