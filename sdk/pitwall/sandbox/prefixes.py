"""The in-sandbox end of the prefix channel (:mod:`pitwall.prefix_wire`).

The worker sends bars in time order and, at each time it chose, asks for the strategy's
weights on everything sent so far. Nothing here ever holds a bar the worker has not sent,
so an answer can only depend on the past of the time it was asked at.

* ``audit`` mode: before every call the bundle's modules are executed anew (fresh module
  globals, so a fit cached in one is not reused) and the scratch dir is emptied; then
  the strategy runs on the prefix. ``audit_fork`` mode: every answer comes from a
  **fresh process** forked from this server, which never loads strategy code; its
  process group is killed after it. Either way, what one re-run could leave behind was
  made from an earlier, shorter prefix: it holds no future, so it can make an honest
  strategy look leaky at worst, never a leaky one look clean. The full run's process
  and files live in another sandbox.
* ``stepped`` mode: one process loads the strategy once and answers every call on the
  growing prefix; state it keeps between calls is the past, so this is point-in-time by
  construction, like event mode. Only the weights at the prefix's last timestamp are sent.

An audit answer holds only what the worker compares: the rows of the last ``window``
timestamps of the prefix and, per symbol, its last row before them (it fixes the target
the window starts from); see pitwall.engine.audit. The strategy still computes on the whole
prefix.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any

from pitwall.frames import HEADER_SIZE, MAGIC, FrameKind, encode_frame
from pitwall.lockstep import HEADER, FrameReader
from pitwall.prefix_wire import AUDIT, AUDIT_FORK, BARS, CALL, END, STEPPED
from pitwall.sandbox.clock import SimulatedClock
from pitwall.sandbox.loader import (
    encode_weights,
    last_ts,
    load_strategy,
    seed_everything,
    strategy_frame,
)

#: The sandbox's only writable dir (pitwall_executor.sandbox.base.SCRATCH).
SCRATCH = "/scratch"
#: Temporary dirs never emptied (an unsandboxed test run shares them with the host).
_SHARED_TMP = ("/", "/tmp", "/var/tmp")
#: The largest frame the worker sends (a chunk of bars): its own limit, not the strategy's.
MAX_CHUNK_BYTES = 1 << 30
#: After a re-run's process exits, how long its pipe may stay open (a lingering child).
_DRAIN_S = 1.0


def serve_prefixes(job: Path, channel: IO[bytes], *, in_fd: int = 0) -> None:
    """Answer the worker's calls until ``END``; the mode is named in ``spec.json``."""
    spec: dict[str, Any] = json.loads((job / "input" / "spec.json").read_text())
    mode = spec.get("mode")
    if mode not in (AUDIT, AUDIT_FORK, STEPPED):
        raise ValueError(f"unknown prefix mode {mode!r}")
    if mode == AUDIT_FORK:
        import polars  # noqa: F401  (loaded once here; every re-run's process inherits it)
    reader = FrameReader(in_fd, max_payload=MAX_CHUNK_BYTES)
    call = _Call(job, spec)
    chunks: list[bytes] = []
    while True:
        kind, payload = reader.read()
        if kind == BARS:
            chunks.append(bytes(payload))
        elif kind == CALL:
            if mode == AUDIT_FORK:
                frame = call.in_child(chunks, (in_fd, channel.fileno()))
            else:
                frame = call.in_process(chunks, fresh=mode == AUDIT)
                chunks = []  # appended to the process's prefix already
            channel.write(frame)
            channel.flush()
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
        window = spec.get("window")
        self.window = int(window) if isinstance(window, int) and window > 0 else None
        self.clock = SimulatedClock()
        self._fn: Any = None
        self._parts: dict[str, list[Any]] = {}  # the prefix, per symbol, in time order
        # The prefix's last ``window`` distinct timestamps, kept as bars arrive: an answer's
        # window starts at the first of them (no pass over the whole prefix per call).
        self._recent: Any = None
        self._installed = False
        # What _forget drops: the modules loaded from the bundle, and the entrypoint's.
        self._bundle = str((job / "bundle").resolve())
        self._entry_module = Path(self.entrypoint.split(":")[0]).stem

    def _run(self, bars: Any, *, last_only: bool, window_from: Any = None) -> bytes:
        """One call on ``bars``; loads the strategy first when it is not loaded."""
        if self._fn is None:
            if not self._installed:
                # Read the bars' time once before the clock is installed, as the runner
                # does: polars loads its datetime conversion on first use and must get
                # the real class.
                self.clock.set(last_ts(bars))
                self.clock.install()
                self._installed = True
            seed_everything(self.seed)
            self._fn = load_strategy(self.job / "bundle", self.entrypoint)
        frame = strategy_frame(self._fn, bars, self.params, seed=self.seed, clock=self.clock)
        if bars.height:
            if last_only:
                frame = _trimmed(frame, lambda pl: pl.col("ts") == bars.get_column("ts").max())
            elif self.window is not None:
                start = window_from if window_from is not None else _window_start(
                    bars.get_column("ts"), self.window)
                frame = _window_rows(frame, start)
        return encode_frame(FrameKind.RESULT, encode_weights(frame))

    def in_process(self, chunks: list[bytes], *, fresh: bool) -> bytes:
        """Append the new bars to this process's prefix and call the strategy: loaded anew
        with an empty scratch dir (``fresh``, the audit; the whole answer), or as it is
        (a stepped run; only the weights at the prefix's last timestamp)."""
        self._append(chunks)
        if fresh:
            self._forget()
        try:
            start = self._window_from() if fresh else None
            if self._fn is None:
                return self._run(self._frame(None), last_only=not fresh, window_from=start)
            lookback = None if fresh else getattr(self._fn, "pitwall_lookback", None)
            return self._run(self._frame(lookback), last_only=not fresh, window_from=start)
        except BaseException as exc:  # the strategy may raise anything
            return _error(exc)

    def _append(self, chunks: list[bytes]) -> None:
        """File the new bars (time order) under their symbols: no re-sort per call."""
        import polars as pl

        for chunk in chunks:
            frame = pl.read_ipc_stream(io.BytesIO(chunk))
            for (symbol,), part in frame.partition_by(
                    "symbol", as_dict=True, maintain_order=True).items():
                self._parts.setdefault(str(symbol), []).append(part)
            if self.window is not None and frame.height:
                seen = frame.get_column("ts").unique()
                if self._recent is not None:
                    seen = pl.concat([self._recent, seen]).unique()
                self._recent = seen.sort().tail(self.window)

    def _window_from(self) -> Any:
        """The first of the prefix's last ``window`` distinct timestamps (None: no window
        or no bars)."""
        if self.window is None or self._recent is None or not len(self._recent):
            return None
        return self._recent[0]

    def _frame(self, lookback: int | None) -> Any:
        """The prefix in a plain run's order, ``(symbol, ts)``; with a declared
        ``lookback``, only each symbol's last ``lookback`` bars (older parts dropped)."""
        import polars as pl

        blocks = []
        for symbol in sorted(self._parts):
            parts = self._parts[symbol]
            block = pl.concat(parts, rechunk=False) if len(parts) > 1 else parts[0]
            if lookback is not None and block.height > lookback:
                block = block.tail(lookback)
                self._parts[symbol] = [block]
            blocks.append(block)
        # One contiguous copy, as a plain run reads it: a reduction over several chunks
        # can round differently, and the weights must match the plain run's bit for bit.
        return pl.concat(blocks, rechunk=True)

    def _forget(self) -> None:
        """Drop the strategy's modules and empty the scratch dir, so the next call loads
        the strategy as a fresh run would."""
        for name, module in list(sys.modules.items()):
            path = getattr(module, "__file__", None) or ""
            if name == self._entry_module or path.startswith(self._bundle):
                del sys.modules[name]
        self._fn = None
        _empty_scratch()

    def in_child(self, chunks: list[bytes], channels: tuple[int, ...]) -> bytes:
        """Audit: a fresh process answers; this one never runs strategy code. The child
        holds neither of the worker's pipes (``channels``): only this server talks to the
        worker, one frame per call."""
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: its own process group, then the strategy
            os.close(read_end)
            for fd in channels:
                with contextlib.suppress(OSError):
                    os.close(fd)
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
            _empty_scratch()  # and whatever it left on disk
        return data if _one_frame(data) else _error_frame(
            "NoResult", "the re-run ended without a result")


def _in_job_order(bars: Any) -> Any:
    """The prefix in the order a plain run's bars come in, ``(symbol, ts)``: the worker
    sends time order, and a strategy must see the same frame as ``bars[ts <= t]``."""
    return bars.sort("symbol", "ts", maintain_order=True)


def _empty_scratch() -> None:
    """Empty the sandbox's writable dir (``$TMPDIR``, /scratch in the sandbox)."""
    scratch = Path(os.environ.get("TMPDIR") or SCRATCH)
    if not scratch.is_dir() or str(scratch) in _SHARED_TMP:
        return
    for entry in scratch.iterdir():
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


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


def _trimmed(frame: Any, keep: Any) -> Any:
    """``frame`` filtered by ``keep(pl)``; an odd frame is sent as it is (the worker's
    validation names what is wrong with it)."""
    import polars as pl

    try:
        return frame.filter(keep(pl))
    except Exception:
        return frame


def _window_start(ts: Any, window: int) -> Any:
    """The first of the last ``window`` distinct values of ``ts`` (pitwall.engine.audit.
    window_start computes the same start from the worker's side)."""
    distinct = ts.unique().sort()
    return distinct[max(len(distinct) - window, 0)]


def _window_rows(frame: Any, start: Any) -> Any:
    """An audit answer: the rows from the window's ``start`` timestamp on and, per symbol,
    its last row before it."""
    import polars as pl

    try:
        before = frame.filter(pl.col("ts") < start)
        carry = before.filter(pl.col("ts") == pl.col("ts").max().over("symbol"))
        return pl.concat([carry, frame.filter(pl.col("ts") >= start)])
    except Exception:
        return frame


def _error(exc: BaseException) -> bytes:
    return _error_frame(type(exc).__name__, str(exc)[:2000])


def _error_frame(kind: str, message: str) -> bytes:
    return encode_frame(FrameKind.ERROR, json.dumps({"error": kind, "message": message}).encode())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
