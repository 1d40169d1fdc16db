"""The lock-step channel of event mode: compact binary frames over two pipes.

Frames use the header of :mod:`pitwall.frames` (``b"PWL1"``, kind byte, 8-byte
big-endian length). One frame per direction per step, each written with ONE ``write``
from a preallocated buffer and read, when it fits (it nearly always does), with ONE
``readv`` into a preallocated buffer: inside gVisor every syscall of the strategy
process is trapped, each far dearer than on the host (docs/benchmarks.md, event-driven
engine), so a step costs the sandbox exactly two.

* feeder → strategy ``STEP``: ``<q d I I B 2x`` (now µs, cash, rows, fills, flags; 27
  bytes, so the rows start 8-byte aligned at offset 40 of the frame), then
  ``rows × fields × symbols`` float64 (the bars since the last step, oldest first, fixed
  symbol order; never a bar after ``now``; ``fields`` is OHLCV, then the run's extra
  fields named in the sandbox's ``spec.json``, e.g. the adjusted prices), the fills
  (:data:`FILL_DTYPE`), and with :data:`PORTFOLIO` the positions (float64 × symbols).
* strategy → feeder ``READY`` (JSON schedule, once) and ``ORDERS``: ``<I I`` (orders,
  cancels), the orders (:data:`ORDER_DTYPE`), the cancelled ids (int64). ``ERROR`` is the
  runner's JSON error frame.

Everything coming from the strategy is untrusted: sizes are checked before decoding,
counts are bounded, and the broker validates each order.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from pitwall.errors import StrategyOutputError
from pitwall.orders import FILL_DTYPE, ORDER_DTYPE, FillTuple, OrderTuple

MAGIC = b"PWL1"
HEADER = struct.Struct(">4sBQ")  # the pitwall.frames frame header
STEP_HEAD = struct.Struct("<qdIIB2x")
ORDERS_HEAD = struct.Struct("<II")
#: Offset of the rows in a STEP frame (a multiple of 8: the rows are aligned float64).
ROWS_AT = HEADER.size + STEP_HEAD.size

ERROR = 2  # pitwall.frames.FrameKind.ERROR
STEP, READY, ORDERS = 16, 17, 18
DUE, PORTFOLIO, END = 1, 2, 4  # STEP flags
MAX_READY = 64 * 1024
#: The most bytes of rows a :class:`StepWriter` copies into its buffer.
STEP_BUFFER_BYTES = 1 << 20


class Lane(Protocol):
    """Where a :class:`StepWriter` publishes a frame first (:class:`pitwall.lane.FeederLane`)."""

    def send(self, frame: memoryview | bytes) -> bool: ...


class FrameReader:
    """Reads whole frames from a pipe: one ``readv`` per frame when the frame fits the
    buffer and arrived in one piece (lock-step: the peer wrote it with one ``write``).

    The payload returned is a view of an internal buffer, valid until the next ``read``.
    """

    def __init__(self, fd: int, *, max_payload: int, size: int = 1 << 16) -> None:
        self.fd = fd
        self.max_payload = max_payload
        self._have = 0  # bytes of the next frame already in the buffer
        self._alloc(size)

    def _alloc(self, size: int) -> None:
        self._buf = bytearray(size)
        self._view = memoryview(self._buf)
        self._iov = [self._view]

    def _fill(self, at: int, need: int) -> int:
        view = self._view
        while at < need:
            n = os.readv(self.fd, [view[at:]])
            if n == 0:
                raise EOFError("the channel was closed")
            at += n
        return at

    def pending(self) -> int:
        """Bytes of a next frame already received (a lock-step peer never sends any)."""
        return self._have

    def drop_leading(self, frame: bytes) -> int:
        """Drop copies of ``frame`` (a whole frame) at the front of what was received;
        the bytes left (the lane's stale wake-ups, :mod:`pitwall.lane`)."""
        n = len(frame)
        while self._have >= n and self._view[:n] == frame:
            rest = bytes(self._view[n:self._have])
            self._view[:len(rest)] = rest
            self._have = len(rest)
        return self._have

    def read(self) -> tuple[int, memoryview]:
        """The next frame's kind and payload; EOFError when the other side closed."""
        got = self._have
        if got == 0:  # the usual case: one readv returns the whole frame
            got = os.readv(self.fd, self._iov)
            if got == 0:
                raise EOFError("the channel was closed")
        if got < HEADER.size:
            got = self._fill(got, HEADER.size)
        magic, kind, length = HEADER.unpack_from(self._buf)
        if magic != MAGIC:
            raise StrategyOutputError("the channel holds bytes that are not a Pitwall frame")
        if length > self.max_payload:
            raise StrategyOutputError(f"a frame of {length} bytes exceeds {self.max_payload}")
        total = HEADER.size + length
        if got == total:
            self._have = 0
            return kind, self._view[HEADER.size:total]
        if total > len(self._buf):
            old = self._view
            self._alloc(total)
            self._buf[:got] = old[:got]
        if got < total:
            got = self._fill(got, total)
            if got == total:
                self._have = 0
                return kind, self._view[HEADER.size:total]
        # More than one frame arrived (lock-step peers never do this): keep the rest.
        payload = memoryview(bytes(self._view[HEADER.size:total]))
        extra = bytes(self._view[total:got])
        self._view[:len(extra)] = extra
        self._have = len(extra)
        return kind, payload


def write_all(fd: int, data: Any) -> None:
    """``os.write`` all of ``data`` (one call unless the pipe takes it in pieces)."""
    view = memoryview(data)
    done = os.write(fd, view)
    while done < len(view):
        done += os.write(fd, view[done:])


def write_frame(fd: int, kind: int, *parts: Any) -> None:
    """Write one frame (header and ``parts``, buffers) with one ``write``."""
    body = b"".join(memoryview(p).cast("B") for p in parts if memoryview(p).nbytes)
    write_all(fd, HEADER.pack(MAGIC, kind, len(body)) + body)


# -- feeder side ----------------------------------------------------------------------
class StepWriter:
    """Builds STEP frames in one preallocated buffer and writes each with one ``write``.

    The buffer holds up to ``max_rows`` rows (the strategy's lookback), at most
    :data:`STEP_BUFFER_BYTES`; a larger step (the first one of a long lookback) is written
    with one ``writev`` straight from the market cube instead of being copied.
    """

    def __init__(self, fd: int, n_symbols: int, max_rows: int, n_fields: int = 5,
                 lane: Lane | None = None) -> None:
        self.fd = fd
        self._lane = lane
        self._row_floats = n_fields * n_symbols
        cap = max(1, min(max_rows, STEP_BUFFER_BYTES // (self._row_floats * 8)))
        self._cap_rows = cap
        self._buf = bytearray(ROWS_AT + cap * self._row_floats * 8)
        self._view = memoryview(self._buf)
        self._rows = np.frombuffer(self._buf, np.float64, cap * self._row_floats, ROWS_AT).reshape(
            cap, n_fields, n_symbols)
        self._ends = [memoryview(self._buf)[:ROWS_AT + k * self._row_floats * 8]
                      for k in range(min(cap, 64) + 1)]  # the frames of 0..64 rows

    def send(self, now: int, rows: npt.NDArray[np.float64], fills: list[FillTuple], *,
             cash: float, positions: npt.NDArray[np.float64] | None, flags: int) -> None:
        """One STEP frame of ``rows`` (``k × fields × symbols``, C-contiguous), the fills and,
        when given, the positions (which set :data:`PORTFOLIO`)."""
        k = len(rows)
        if not fills and positions is None and k <= 64 and k <= self._cap_rows:  # usual
            buf = self._buf
            HEADER.pack_into(buf, 0, MAGIC, STEP, STEP_HEAD.size + k * self._row_floats * 8)
            STEP_HEAD.pack_into(buf, HEADER.size, now, cash, k, 0, flags)
            self._rows[:k] = rows
            frame = self._ends[k]
            if self._lane is not None and self._lane.send(frame):
                return
            done = os.write(self.fd, frame)
            if done < len(frame):  # a pipe may take a frame above PIPE_BUF in pieces
                write_all(self.fd, frame[done:])
            return
        self._send(now, rows, fills, cash=cash, positions=positions, flags=flags)

    def _send(self, now: int, rows: npt.NDArray[np.float64], fills: list[FillTuple], *,
              cash: float, positions: npt.NDArray[np.float64] | None, flags: int) -> None:
        k = len(rows)
        size = k * self._row_floats
        if positions is not None:
            flags |= PORTFOLIO
        tail = b""
        if fills:
            tail += np.array(fills, dtype=FILL_DTYPE).tobytes()
        if positions is not None:
            tail += np.ascontiguousarray(positions, dtype=np.float64).tobytes()
        length = STEP_HEAD.size + size * 8 + len(tail)
        buf = self._buf
        HEADER.pack_into(buf, 0, MAGIC, STEP, length)
        STEP_HEAD.pack_into(buf, HEADER.size, now, cash, k, len(fills), flags)
        if k > self._cap_rows:  # too big to copy: header, then the rows from the cube
            parts = [self._view[:ROWS_AT], np.ascontiguousarray(rows).data.cast("B")]
            done = os.writev(self.fd, [*parts, tail] if tail else parts)
            if done < HEADER.size + length:
                rest = b"".join(bytes(p) for p in parts) + tail
                write_all(self.fd, rest[done:])
            return
        self._rows[:k] = rows
        end = ROWS_AT + size * 8
        frame = bytes(self._view[:end]) + tail if tail else self._view[:end]
        if self._lane is None or not self._lane.send(frame):
            write_all(self.fd, frame)


NO_ORDERS: tuple[list[OrderTuple], list[int]] = ([], [])


def decode_orders(kind: int, payload: memoryview, *, max_orders: int,
                  ) -> tuple[list[OrderTuple], list[int]]:
    """The orders and cancels of an ORDERS frame, bounded and size-checked."""
    if kind != ORDERS:
        raise StrategyOutputError(f"expected the strategy's orders, got a frame of kind {kind}")
    if len(payload) < ORDERS_HEAD.size:
        raise StrategyOutputError("an orders frame is too short")
    n_orders, n_cancels = ORDERS_HEAD.unpack_from(payload)
    if n_orders > max_orders or n_cancels > max_orders:
        raise StrategyOutputError(f"the strategy sent more than {max_orders} orders or cancels "
                                  "in one step; trade less often or in fewer orders")
    size = ORDERS_HEAD.size + n_orders * ORDER_DTYPE.itemsize + n_cancels * 8
    if len(payload) != size:
        raise StrategyOutputError("an orders frame has the wrong size for its counts")
    if n_orders == 0 and n_cancels == 0:
        return NO_ORDERS
    orders = np.frombuffer(payload, ORDER_DTYPE, n_orders, ORDERS_HEAD.size).tolist()
    cancels = np.frombuffer(payload, np.int64, n_cancels,
                            ORDERS_HEAD.size + n_orders * ORDER_DTYPE.itemsize).tolist()
    return orders, cancels


def decode_ready(kind: int, payload: memoryview) -> Any:
    """The strategy's schedule (JSON, size-bounded); validate it with ``check_schedule``."""
    if kind != READY or len(payload) > MAX_READY:
        raise StrategyOutputError("the strategy did not start with a READY frame")
    try:
        return json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise StrategyOutputError("the READY frame is not JSON") from None


# -- strategy side --------------------------------------------------------------------
EMPTY_ORDERS = ORDERS_HEAD.pack(0, 0)
#: The whole ORDERS frame of a step without orders: one constant ``write``.
EMPTY_ORDERS_FRAME = HEADER.pack(MAGIC, ORDERS, ORDERS_HEAD.size) + EMPTY_ORDERS


def orders_frame(orders: list[OrderTuple], cancels: list[int]) -> bytes:
    """One whole ORDERS frame (the constant one when there is nothing to send)."""
    if not orders and not cancels:
        return EMPTY_ORDERS_FRAME
    body = (ORDERS_HEAD.pack(len(orders), len(cancels))
            + np.array(orders, dtype=ORDER_DTYPE).tobytes()
            + np.array(cancels, dtype=np.int64).tobytes())
    return HEADER.pack(MAGIC, ORDERS, len(body)) + body



def decode_step(payload: memoryview, n_symbols: int, n_fields: int = 5) -> tuple[
        int, float, int, npt.NDArray[np.float64], list[FillTuple],
        npt.NDArray[np.float64] | None]:
    """``(now, cash, flags, rows, fills, positions)`` of a STEP frame (views of payload)."""
    now, cash, n_rows, n_fills, flags = STEP_HEAD.unpack_from(payload)
    at = STEP_HEAD.size
    size = n_rows * n_fields * n_symbols
    if len(payload) != at + size * 8 + n_fills * FILL_DTYPE.itemsize + (
            n_symbols * 8 if flags & PORTFOLIO else 0):
        raise ValueError("a STEP frame has the wrong size for its counts")
    rows = np.frombuffer(payload, np.float64, size, at).reshape(n_rows, n_fields, n_symbols)
    at += size * 8
    fills = np.frombuffer(payload, FILL_DTYPE, n_fills, at).tolist() if n_fills else []
    at += n_fills * FILL_DTYPE.itemsize
    positions = np.frombuffer(payload, np.float64, n_symbols, at) if flags & PORTFOLIO else None
    return now, cash, flags, rows, fills, positions
