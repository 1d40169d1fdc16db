"""The in-sandbox end of the prefix channel (:mod:`pitwall.prefix_wire`).

The worker sends bars in time order and, at each time it chose, asks for the strategy's
weights on everything sent so far. Nothing here ever holds a bar the worker has not sent,
so an answer can only depend on the past of the time it was asked at.

* ``audit`` mode: every answer comes from a **fresh process** forked from this server
  before it loaded any strategy code. The child loads the strategy module anew, runs it on
  the prefix, sends its frame through a pipe and exits; its process group is killed
  after it. What one re-run could leave behind (a module global, a file in ``/scratch``)
  was made by a process that saw an earlier, shorter prefix, so it holds no future.
* ``stepped`` mode: one process loads the strategy once and answers every call on the
  growing prefix; state it keeps between calls is the past, so this is point-in-time by
  construction, like event mode. Only the weights at the prefix's last timestamp are sent.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import signal
import time
import traceback
from pathlib import Path
from typing import IO, Any

from pitwall.frames import HEADER_SIZE, MAGIC, FrameKind, encode_frame
from pitwall.lockstep import HEADER, FrameReader
from pitwall.prefix_wire import AUDIT, BARS, CALL, END, STEPPED
from pitwall.sandbox.clock import SimulatedClock
from pitwall.sandbox.loader import call_strategy, last_ts, load_strategy, seed_everything

#: The largest frame the worker sends (a chunk of bars): its own limit, not the strategy's.
MAX_CHUNK_BYTES = 1 << 30
#: After a re-run's process exits, how long its pipe may stay open (a lingering child).
_DRAIN_S = 1.0


def serve_prefixes(job: Path, channel: IO[bytes], *, in_fd: int = 0) -> None:
    """Answer the worker's calls until ``END``; the mode is named in ``spec.json``."""
    spec: dict[str, Any] = json.loads((job / "input" / "spec.json").read_text())
    mode = spec.get("mode")
    if mode not in (AUDIT, STEPPED):
        raise ValueError(f"unknown prefix mode {mode!r}")
    reader = FrameReader(in_fd, max_payload=MAX_CHUNK_BYTES)
    call = _Call(job, spec)
    chunks: list[bytes] = []
    while True:
        kind, payload = reader.read()
        if kind == BARS:
            chunks.append(bytes(payload))
        elif kind == CALL:
            frame = call.in_child(chunks) if mode == AUDIT else call.in_process(chunks)
            channel.write(frame)
            channel.flush()
            if mode == STEPPED:
                chunks = []  # appended to the process's prefix already
        elif kind == END:
            return
        else:
            raise ValueError(f"unexpected frame kind {kind} on the prefix channel")


class _Call:
    """One strategy call on a prefix, in a fresh child or in this process."""

    def __init__(self, job: Path, spec: dict[str, Any]) -> None:
        self.job = job
        self.entrypoint = str(spec["entrypoint"])
        self.params = dict(spec.get("params") or {})
        self.seed = int(spec.get("seed", 0))
        self.clock = SimulatedClock()
        self._fn: Any = None
        self._prefix: Any = None

    def _run(self, bars: Any, *, last_only: bool) -> bytes:
        if self._fn is None:
            # Read the bars' time once before the clock is installed, as the runner does:
            # polars loads its datetime conversion on first use and must get the real class.
            self.clock.set(last_ts(bars))
            self.clock.install()
            seed_everything(self.seed)
            self._fn = load_strategy(self.job / "bundle", self.entrypoint)
        payload = call_strategy(self._fn, bars, self.params, seed=self.seed, clock=self.clock)
        if last_only and bars.height:
            payload = _last_rows(payload, bars)
        return encode_frame(FrameKind.RESULT, payload)

    def in_process(self, chunks: list[bytes]) -> bytes:
        """Stepped: append the new bars to this process's prefix and call the strategy."""
        import polars as pl

        new = [pl.read_ipc_stream(io.BytesIO(c)) for c in chunks]
        self._prefix = pl.concat([self._prefix, *new] if self._prefix is not None else new,
                                 rechunk=False)
        try:
            return self._run(_in_job_order(self._prefix), last_only=True)
        except BaseException as exc:  # the strategy may raise anything
            return _error(exc)

    def in_child(self, chunks: list[bytes]) -> bytes:
        """Audit: a fresh process answers; this one never runs strategy code."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its own process group, then the strategy
            os.close(read_end)
            os.setsid()
            code = 0
            try:
                import polars as pl

                bars = pl.concat([pl.read_ipc_stream(io.BytesIO(c)) for c in chunks])
                frame = self._run(_in_job_order(bars), last_only=False)
            except BaseException as exc:
                traceback.print_exc()
                frame, code = _error(exc), 3
            with contextlib.suppress(OSError):
                _write_all(write_end, frame)
            os._exit(code)
        os.close(write_end)
        try:
            data = _collect(read_end, pid)
        finally:
            os.close(read_end)
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)  # whatever the re-run left running
        return data if _one_frame(data) else _error_frame(
            "NoResult", "the re-run ended without a result")


def _in_job_order(bars: Any) -> Any:
    """The prefix in the order a plain run's bars come in, ``(symbol, ts)``: the worker
    sends time order, and a strategy must see the same frame as ``bars[ts <= t]``."""
    return bars.sort("symbol", "ts", maintain_order=True)


def _collect(fd: int, pid: int) -> bytes:
    """Everything the child wrote to ``fd``, until it exited and the pipe drained."""
    parts: list[bytes] = []
    exited_at: float | None = None
    while True:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            parts.append(chunk)
        if exited_at is None and os.waitpid(pid, os.WNOHANG)[0] == pid:
            exited_at = time.monotonic()
        if exited_at is not None and not ready and time.monotonic() - exited_at > _DRAIN_S:
            break
    if exited_at is None:
        os.waitpid(pid, 0)
    return b"".join(parts)


def _one_frame(data: bytes) -> bool:
    if len(data) < HEADER_SIZE:
        return False
    magic, kind, length = HEADER.unpack_from(data)
    return magic == MAGIC and kind in (FrameKind.RESULT, FrameKind.ERROR) and (
        len(data) == HEADER_SIZE + length)


def _last_rows(payload: bytes, bars: Any) -> bytes:
    """Only the weights at the prefix's last timestamp (what a stepped run keeps)."""
    import polars as pl

    try:
        weights = pl.read_ipc_stream(io.BytesIO(payload))
        last = weights.filter(pl.col("ts") == bars.get_column("ts").max())
    except Exception:  # an odd frame: the worker's validation names what is wrong
        return payload
    buf = io.BytesIO()
    last.write_ipc_stream(buf)
    return buf.getvalue()


def _error(exc: BaseException) -> bytes:
    return _error_frame(type(exc).__name__, str(exc)[:2000])


def _error_frame(kind: str, message: str) -> bytes:
    return encode_frame(FrameKind.ERROR, json.dumps({"error": kind, "message": message}).encode())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
