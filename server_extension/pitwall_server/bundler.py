"""Notebook → strategy bundle.

The rule (documented in docs/notebooks.md):

1. Take the code cells from the top of the notebook up to and including the active
   cell (the whole notebook when no cell is active).
2. Drop cells tagged ``pitwall:skip`` (exploration, plots, local quick runs).
3. A cell tagged ``pitwall:params`` holds the default parameters: one assignment of a
   dict literal (``params = {"fast": 10, "slow": 50}``). It is read as data with
   :func:`ast.literal_eval` and travels as JSON in the spec; it is never pasted into the
   strategy's code.
4. IPython syntax is not Python: a line magic that only changes the notebook's display
   (``%matplotlib``, ``%load_ext``, ``%config``, ``%autoreload``…) is dropped; any other
   magic, cell magic or shell escape (``!ls``) is refused with the cell number, since it
   would run something the sandbox cannot (and must not) do.
5. The remaining cells are concatenated in order into ``strategy.py``; every cell is
   checked to be valid Python, and the bundle manifest records the cell ids.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from typing import Any

from pitwall.bundle import build_bundle
from pitwall.errors import BundleError

SKIP_TAG = "pitwall:skip"
PARAMS_TAG = "pitwall:params"
DROPPABLE_MAGICS = frozenset({
    "matplotlib", "load_ext", "reload_ext", "config", "autoreload", "aimport", "precision",
    "pprint", "xmode", "colors",
})


class NotebookBundleError(BundleError):
    """A cell cannot go into a bundle; ``cell`` is its 1-based position among all cells."""

    def __init__(self, cell: int, message: str, cell_id: str | None = None) -> None:
        super().__init__(f"cell {cell}: {message}")
        self.cell = cell
        self.cell_id = cell_id
        self.reason = message


@dataclass
class NotebookBundle:
    """The bundle built from a notebook, and what went into it."""

    data: bytes
    params: dict[str, Any]
    cell_ids: list[str]
    source: str
    dropped: list[int] = field(default_factory=list)


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _tags(cell: dict[str, Any]) -> set[str]:
    tags = cell.get("metadata", {}).get("tags", [])
    return {str(t) for t in tags} if isinstance(tags, list) else set()


def _clean_ipython(src: str, number: int, cell_id: str | None) -> str:
    """Drop display-only magics; refuse every other magic or shell escape."""
    out: list[str] = []
    for line in src.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("%%"):
            name = stripped[2:].split(maxsplit=1)[0] if len(stripped) > 2 else ""
            raise NotebookBundleError(number, f"cell magic %%{name} cannot run in a "
                                      "sandboxed strategy; move it to a cell tagged "
                                      f"{SKIP_TAG}", cell_id)
        if stripped.startswith("%"):
            name = stripped[1:].split(maxsplit=1)[0] if len(stripped) > 1 else ""
            if name in DROPPABLE_MAGICS:
                continue
            raise NotebookBundleError(number, f"magic %{name} cannot run in a sandboxed "
                                      f"strategy; remove it or tag the cell {SKIP_TAG}",
                                      cell_id)
        if stripped.startswith("!") or _is_shell_assignment(stripped):
            raise NotebookBundleError(number, "shell escapes (!cmd) cannot run in a "
                                      f"sandboxed strategy; tag the cell {SKIP_TAG}", cell_id)
        out.append(line)
    return "\n".join(out)


def _is_shell_assignment(line: str) -> bool:
    # ``files = !ls`` is IPython's shell-capture assignment.
    head, sep, tail = line.partition("=")
    return bool(sep) and head.strip().isidentifier() and tail.lstrip().startswith("!")


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


def bundle_notebook(
    notebook: dict[str, Any], *, active_cell: int | None = None, kind: str = "vectorized",
    entrypoint_function: str | None = None,
) -> NotebookBundle:
    """Build a strategy bundle from a notebook (nbformat 4 JSON) by the rule above.

    ``active_cell`` is the 0-based index of the active cell among all cells.
    """
    cells = notebook.get("cells")
    if not isinstance(cells, list):
        raise BundleError("not a notebook: it has no list of cells")
    last = len(cells) - 1 if active_cell is None else active_cell
    if not 0 <= last < len(cells):
        raise BundleError(f"active cell {active_cell} is outside the notebook's "
                          f"{len(cells)} cells")
    parts: list[str] = []
    ids: list[str] = []
    dropped: list[int] = []
    params: dict[str, Any] = {}
    for index, cell in enumerate(cells[: last + 1]):
        number = index + 1
        cell_id = cell.get("id")
        if cell.get("cell_type") != "code":
            continue
        tags = _tags(cell)
        src = _source(cell)
        if SKIP_TAG in tags or not src.strip():
            dropped.append(number)
            continue
        if PARAMS_TAG in tags:
            params = read_params(src, number, cell_id)
            continue
        code = _clean_ipython(src, number, cell_id)
        try:
            ast.parse(code)
        except SyntaxError as exc:
            raise NotebookBundleError(number, f"invalid Python at line {exc.lineno}: "
                                      f"{exc.msg}", cell_id) from exc
        parts.append(f"# --- cell {number}" + (f" ({cell_id})" if cell_id else "") + "\n" + code)
        ids.append(str(cell_id or number))
    if not parts:
        raise BundleError("no code cells to bundle up to the active cell; write the strategy "
                          "in a code cell above the one you run from")
    source = "\n\n".join(parts) + "\n"
    entry = "strategy.py" + (f":{entrypoint_function}" if entrypoint_function else "")
    data = build_bundle({"strategy.py": source}, entrypoint=entry, kind=kind, source_cells=ids)
    return NotebookBundle(data=data, params=params, cell_ids=ids, source=source,
                          dropped=dropped)
