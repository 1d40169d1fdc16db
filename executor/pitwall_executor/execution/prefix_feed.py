"""The worker's end of the prefix channel (:mod:`pitwall.prefix_wire`): feed a sandboxed
vectorized strategy its bars in time order and collect its weights at chosen times.

Used by the lookahead audit (one fresh process per cut inside a fresh sandbox) and by
stepped runs (one process, decisions at a schedule). A bar is written to the sandbox only
once every earlier call has been answered, so no answer can depend on a later bar.
Answers are untrusted: each is one frame within the output limit, decoded as Arrow IPC
with the weight columns or as a JSON error, never unpickled.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from typing import BinaryIO, Protocol, TypeAlias

import numpy as np
import polars as pl
import pyarrow as pa

from pitwall.engine.audit import BUDGET_PREFIX
from pitwall.errors import StrategyOutputError
from pitwall.frames import FrameKind, decode_error, decode_result
from pitwall.lockstep import FrameReader, write_frame
from pitwall.prefix_wire import BARS, CALL, END

#: One answer: the weights, or why there are none (the re-run raised, ran out of budget).
Answer: TypeAlias = pa.Table | str


class Pacer(Protocol):
    """Decides, call by call, which of the planned calls are made (a time budget)."""

    def keep(self, index: int, rows: Sequence[int]) -> bool: ...

    def observe(self, index: int, rows: int, seconds: float) -> None: ...


def feed_prefixes(stdin: BinaryIO, stdout: BinaryIO, bars: pl.DataFrame,
                  times_us: Sequence[int], *, max_answer_bytes: int,
                  deadline: float | None = None, pacer: Pacer | None = None) -> list[Answer]:
    """Ask for the weights on ``bars[ts <= t]`` for each ``t`` of ``times_us`` (ascending).

    Once ``deadline`` (``time.monotonic()``) has passed, the remaining times get the
    answer "not checked" instead of a call; a ``pacer`` may skip calls before that (given
    every call's prefix size in rows). Raises :class:`StrategyOutputError` when the
    sandbox breaks the protocol and ``EOFError`` when it stopped answering.
    """
    ordered = bars.sort("ts", "symbol", maintain_order=True)
    ts_us = ordered.get_column("ts").dt.epoch("us").to_numpy()
    reader = FrameReader(stdout.fileno(), max_payload=max_answer_bytes)
    out = stdin.fileno()
    answers: list[Answer] = []
    sent = 0
    ends = [int(e) for e in np.searchsorted(ts_us, np.asarray(times_us), side="right")]
    for i, end in enumerate(ends):
        if deadline is not None and time.monotonic() > deadline:
            answers += [f"{BUDGET_PREFIX}it ran out"] * (len(times_us) - i)
            break
        if pacer is not None and not pacer.keep(i, ends):
            answers.append(f"{BUDGET_PREFIX}thinned at random")
            continue
        started = time.monotonic()
        if end > sent:
            write_frame(out, BARS, _ipc(ordered.slice(sent, end - sent)))
            sent = end
        write_frame(out, CALL)
        answers.append(_answer(*reader.read()))
        if pacer is not None:
            pacer.observe(i, end, time.monotonic() - started)
    write_frame(out, END)
    return answers


def _answer(kind: int, payload: memoryview) -> Answer:
    if kind == FrameKind.RESULT:
        try:
            return decode_result(bytes(payload))
        except StrategyOutputError as exc:
            return f"unreadable result ({exc})"
    if kind == FrameKind.ERROR:
        err = decode_error(bytes(payload))
        return f"{err.get('error', 'error')}: {err.get('message', '')}"[:500]
    raise StrategyOutputError(f"frame kind {kind} on the prefix channel; expected a result")


def _ipc(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_ipc_stream(buf, compression="uncompressed")
    return buf.getvalue()
