"""A failed job's log, made readable: the traceback only, its frames named by notebook cell.

The sandbox runs the bundle's ``strategy.py`` at ``/job/bundle/``; a traceback names that
file and its line, which a researcher never saw. A *cell map* (one :class:`CellSpan` per
cell that went into ``strategy.py``, with the line it starts at) turns such a frame into
"cell 2, line 5". The map comes from the bundle manifest's ``cell_lines`` when the bundler
recorded it, else from the ``# --- cell N (id)`` marker lines the notebook bundler writes
above each cell (:func:`spans_from_source`), or from ``%%backtest``, which knows which
earlier inputs it took (:func:`pitwall.notebook.magic.dependency_bundle`).

What comes before the first ``Traceback (most recent call last):`` (warnings printed by
libraries while importing, progress lines) is counted and left out; frames of Pitwall's own
runner are folded into one line. The full log stays available to whoever wants it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

BUNDLE_DIR = "/job/bundle/"
TRACEBACK_HEAD = "Traceback (most recent call last):"
_MARKER = re.compile(r"^# --- cell (\d+)(?: \((.*)\))?$")
_FRAME = re.compile(r'^(\s*)File "([^"]+)", line (\d+)(?:, in (.+))?$')
#: Largest log parsed; a longer one is cut to its last part (the traceback is at the end).
MAX_LOG_CHARS = 512 * 1024


@dataclass(frozen=True)
class CellSpan:
    """Lines ``first_line`` .. ``first_line + n_lines - 1`` of ``file`` are one cell's code."""

    label: str  # what the researcher calls it: "cell 2", "In [7]", "this cell"
    first_line: int
    n_lines: int
    cell_id: str | None = None
    number: int | None = None  # 1-based position among the notebook's cells
    file: str = "strategy.py"
    line_offset: int = 0  # the cell's line of ``first_line``, less one

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellSpan:
        return cls(label=str(data["label"]), first_line=int(data["first_line"]),
                   n_lines=int(data["n_lines"]),
                   cell_id=None if data.get("cell_id") is None else str(data["cell_id"]),
                   number=None if data.get("number") is None else int(data["number"]),
                   file=str(data.get("file", "strategy.py")),
                   line_offset=int(data.get("line_offset", 0)))


def spans_from_source(source: str, file: str = "strategy.py") -> list[CellSpan]:
    """The cells of a notebook bundle's ``strategy.py``, from its ``# --- cell N (id)`` lines."""
    lines = source.splitlines()
    starts: list[tuple[int, int, str | None]] = []  # (marker line, cell number, cell id)
    for index, line in enumerate(lines, start=1):
        match = _MARKER.match(line)
        if match:
            starts.append((index, int(match.group(1)), match.group(2)))
    spans = []
    for k, (marker, number, cell_id) in enumerate(starts):
        end = starts[k + 1][0] - 1 if k + 1 < len(starts) else len(lines)
        while end > marker and not lines[end - 1].strip():  # blank separator lines
            end -= 1
        spans.append(CellSpan(label=f"cell {number}", first_line=marker + 1,
                              n_lines=max(0, end - marker), cell_id=cell_id, number=number,
                              file=file))
    return spans


def spans_from_manifest(manifest: dict[str, Any], files: dict[str, bytes]) -> list[CellSpan]:
    """A bundle's cell map: the manifest's ``cell_lines`` if recorded, else the markers."""
    recorded = manifest.get("cell_lines")
    if isinstance(recorded, list):
        try:
            return [CellSpan.from_json(item) for item in recorded if isinstance(item, dict)]
        except (KeyError, TypeError, ValueError):
            pass  # an older or different layout: fall back to the markers
    entry = str(manifest.get("entrypoint", "strategy.py")).split(":", 1)[0]
    data = files.get(entry)
    return spans_from_source(data.decode("utf-8", "replace"), entry) if data else []


@dataclass
class Frame:
    """One frame of the traceback, with the cell it falls in when it is the strategy's."""

    file: str
    line: int
    function: str | None
    code: str | None = None
    cell: str | None = None
    cell_id: str | None = None
    cell_number: int | None = None
    cell_line: int | None = None


@dataclass
class Failure:
    """What the UI shows of a failed job's log."""

    traceback: str  # the readable traceback: cells named, platform frames folded
    error: str  # its last line, e.g. "ValueError: window must be > 0"
    frames: list[Frame] = field(default_factory=list)
    noise_lines: int = 0  # lines before the traceback, left out
    cell: str | None = None  # the innermost strategy frame's cell, e.g. "cell 2"
    cell_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def locate(file: str, line: int, spans: list[CellSpan]) -> tuple[CellSpan, int] | None:
    """The cell a line of a bundle file falls in, and the line within that cell."""
    name = file.removeprefix(BUNDLE_DIR)
    for span in spans:
        if span.file == name and span.first_line <= line < span.first_line + span.n_lines:
            return span, line - span.first_line + 1 + span.line_offset
    return None


def clean_log(log: str, spans: list[CellSpan]) -> Failure:
    """The traceback of a failed job's log, its strategy frames named by cell."""
    log = log[-MAX_LOG_CHARS:]
    lines = log.splitlines()
    head = next((i for i, ln in enumerate(lines) if ln.strip() == TRACEBACK_HEAD), None)
    if head is None:  # no Python traceback (killed, timed out, a platform message): as is
        tail = [ln for ln in lines if ln.strip()]
        return Failure(traceback="\n".join(tail[-60:]), error=tail[-1] if tail else "",
                       noise_lines=max(0, len(tail) - 60))
    body = lines[head:]
    frames: list[Frame] = []
    out: list[str] = []
    hidden = 0
    strategy_frames = any(BUNDLE_DIR in ln for ln in body)
    k = 0
    while k < len(body):
        line = body[k]
        match = _FRAME.match(line)
        if not match:
            if hidden:
                out.append(f"  … {hidden} Pitwall frame{'s' if hidden > 1 else ''} hidden")
                hidden = 0
            out.append(line)
            k += 1
            continue
        indent, file, number, function = match.groups()
        code_line = body[k + 1] if k + 1 < len(body) and not _FRAME.match(body[k + 1]) \
            and body[k + 1].startswith(indent + "  ") else None
        k += 2 if code_line is not None else 1
        # Carets under the code (``^^^^``) belong to the frame.
        while k < len(body) and body[k].strip() and set(body[k].strip()) <= set("^~"):
            k += 1
        if strategy_frames and not file.startswith(BUNDLE_DIR):
            hidden += 1
            continue
        if hidden:
            out.append(f"  … {hidden} Pitwall frame{'s' if hidden > 1 else ''} hidden")
            hidden = 0
        frame = Frame(file=file, line=int(number), function=function,
                      code=code_line.strip() if code_line else None)
        found = locate(file, frame.line, spans)
        if found is not None:
            span, within = found
            frame.cell, frame.cell_id, frame.cell_number = span.label, span.cell_id, span.number
            frame.cell_line = within
            out.append(f'{indent}{span.label.capitalize()}, line {within}'
                       + (f", in {function}" if function else "")
                       + f"   [{file.removeprefix(BUNDLE_DIR)} line {number}]")
        else:
            out.append(line)
        if code_line is not None:
            out.append(code_line)
        frames.append(frame)
    if hidden:
        out.append(f"  … {hidden} Pitwall frame{'s' if hidden > 1 else ''} hidden")
    error = next((ln for ln in reversed(body) if ln.strip() and not ln.startswith(" ")), "")
    innermost = next((f for f in reversed(frames) if f.cell is not None), None)
    return Failure(traceback="\n".join(out), error=error, frames=frames,
                   noise_lines=len([ln for ln in lines[:head] if ln.strip()]),
                   cell=innermost.cell if innermost else None,
                   cell_id=innermost.cell_id if innermost else None)
