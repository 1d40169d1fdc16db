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
from typing import BinaryIO, TypeAlias

import numpy as np
import polars as pl
import pyarrow as pa

from pitwall.errors import StrategyOutputError
from pitwall.frames import FrameKind, decode_error, decode_result
from pitwall.lockstep import FrameReader, write_frame
from pitwall.prefix_wire import BARS, CALL, END

#: One answer: the weights, or why there are none (the re-run raised, ran out of budget).
Answer: TypeAlias = pa.Table | str


def feed_prefixes(stdin: BinaryIO, stdout: BinaryIO, bars: pl.DataFrame,
                  times_us: Sequence[int], *, max_answer_bytes: int,
                  deadline: float | None = None) -> list[Answer]:
    """Ask for the weights on ``bars[ts <= t]`` for each ``t`` of ``times_us`` (ascending).

    Once ``deadline`` (``time.monotonic()``) has passed, the remaining times get the
    answer "not checked" instead of a call. Raises :class:`StrategyOutputError` when the
    sandbox breaks the protocol and ``EOFError`` when it stopped answering.
    """
    ordered = bars.sort("ts", "symbol", maintain_order=True)
    ts_us = ordered.get_column("ts").dt.epoch("us").to_numpy()
    reader = FrameReader(stdout.fileno(), max_payload=max_answer_bytes)
    out = stdin.fileno()
    answers: list[Answer] = []
    sent = 0
    for i, t in enumerate(times_us):
        if deadline is not None and time.monotonic() > deadline:
            answers += ["not checked: the audit's time budget ran out"] * (len(times_us) - i)
            break
        end = int(np.searchsorted(ts_us, t, side="right"))
        if end > sent:
            write_frame(out, BARS, _ipc(ordered.slice(sent, end - sent)))
            sent = end
        write_frame(out, CALL)
        answers.append(_answer(*reader.read()))
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
