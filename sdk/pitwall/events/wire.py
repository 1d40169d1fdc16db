"""The lock-step channel of event mode: compact binary frames over two pipes.

Frames use the header of :mod:`pitwall.channel` (``b"PWL1"``, kind byte, 8-byte
big-endian length). One frame per direction per step, written with one ``writev`` and
read, usually, with one ``read``: syscalls are the cost inside gVisor (ptrace).

* feeder → strategy ``STEP``: ``<q d I I B`` (now µs, cash, rows, fills, flags), then
  ``rows × 5 × symbols`` float64 (the bars since the last step, oldest first, fixed
  symbol order; never a bar after ``now``), the fills (:data:`FILL_DTYPE`), and with
  :data:`PORTFOLIO` the positions (float64 × symbols).
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
from typing import Any

import numpy as np
import numpy.typing as npt

from pitwall.errors import StrategyOutputError
from pitwall.events.orders import FILL_DTYPE, ORDER_DTYPE, FillTuple, OrderTuple

MAGIC = b"PWL1"
HEADER = struct.Struct(">4sBQ")  # the pitwall.channel frame header
STEP_HEAD = struct.Struct("<qdIIB")
ORDERS_HEAD = struct.Struct("<II")

ERROR = 2  # pitwall.channel.FrameKind.ERROR
STEP, READY, ORDERS = 16, 17, 18
DUE, PORTFOLIO, END = 1, 2, 4  # STEP flags
MAX_READY = 64 * 1024


class FrameReader:
    """Reads whole frames from a pipe with as few ``read`` calls as the data allows.

    The payload returned is a view of an internal buffer, valid until the next ``read``.
    """

    def __init__(self, fd: int, *, max_payload: int, size: int = 1 << 16) -> None:
        self.fd = fd
        self.max_payload = max_payload
        self._buf = bytearray(size)
        self._have = 0  # bytes of the next frame already read

    def _fill(self, view: memoryview, at: int, need: int) -> int:
        while at < need:
            n = os.readv(self.fd, [view[at:]])
            if n == 0:
                raise EOFError("the channel was closed")
            at += n
        return at

    def read(self) -> tuple[int, memoryview]:
        """The next frame's kind and payload; EOFError when the other side closed."""
        view = memoryview(self._buf)
        got = self._fill(view, self._have, HEADER.size)
        magic, kind, length = HEADER.unpack_from(view)
        if magic != MAGIC:
            raise StrategyOutputError("the channel holds bytes that are not a Pitwall frame")
        if length > self.max_payload:
            raise StrategyOutputError(f"a frame of {length} bytes exceeds {self.max_payload}")
        total = HEADER.size + length
        if total > len(self._buf):
            grown = bytearray(total)
            grown[:got] = view[:got]
            self._buf, view = grown, memoryview(grown)
        got = self._fill(view, got, total)
        if got > total:  # lock-step: the peer never runs ahead; keep the bytes anyway
            extra = bytes(view[total:got])
            rest = bytearray(max(len(self._buf), len(extra)))
            rest[:len(extra)] = extra
            payload = memoryview(bytes(view[HEADER.size:total]))
            self._buf, self._have = rest, len(extra)
            return kind, payload
        self._have = 0
        return kind, view[HEADER.size:total]


def write_frame(fd: int, kind: int, *parts: Any) -> None:
    """Write one frame (header and ``parts``, buffers) with ``writev``, retrying short writes."""
    bufs: list[memoryview] = []
    for part in parts:
        view = memoryview(part)
        if view.nbytes:  # an empty numpy slice cannot be cast
            bufs.append(view.cast("B"))
    size = sum(len(b) for b in bufs)
    bufs.insert(0, memoryview(HEADER.pack(MAGIC, kind, size)))
    total = size + HEADER.size
    done = os.writev(fd, bufs)
    if done < total:
        rest = b"".join(bytes(b) for b in bufs)[done:]
        while rest:
            rest = rest[os.write(fd, rest):]


# -- feeder side ----------------------------------------------------------------------
def send_step(fd: int, now: int, rows: npt.NDArray[np.float64], fills: list[FillTuple],
              *, cash: float, positions: npt.NDArray[np.float64] | None, flags: int) -> None:
    """One STEP frame: ``rows`` is a C-contiguous slice of the market cube (not copied)."""
    parts: list[Any] = [STEP_HEAD.pack(now, cash, len(rows), len(fills),
                                       flags | (PORTFOLIO if positions is not None else 0)),
                        rows]
    if fills:
        parts.append(np.array(fills, dtype=FILL_DTYPE))
    if positions is not None:
        parts.append(positions)
    write_frame(fd, STEP, *parts)


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
        return [], []
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


def send_orders(fd: int, orders: list[OrderTuple], cancels: list[int]) -> None:
    """One ORDERS frame (a constant frame when there is nothing to send)."""
    if not orders and not cancels:
        write_frame(fd, ORDERS, EMPTY_ORDERS)
        return
    write_frame(fd, ORDERS, ORDERS_HEAD.pack(len(orders), len(cancels)),
                np.array(orders, dtype=ORDER_DTYPE), np.array(cancels, dtype=np.int64))


def decode_step(payload: memoryview, n_symbols: int) -> tuple[
        int, float, int, npt.NDArray[np.float64], list[FillTuple],
        npt.NDArray[np.float64] | None]:
    """``(now, cash, flags, rows, fills, positions)`` of a STEP frame (views of payload)."""
    now, cash, n_rows, n_fills, flags = STEP_HEAD.unpack_from(payload)
    at = STEP_HEAD.size
    rows = np.frombuffer(payload, np.float64, n_rows * 5 * n_symbols, at).reshape(
        n_rows, 5, n_symbols)
    at += rows.nbytes
    fills = np.frombuffer(payload, FILL_DTYPE, n_fills, at).tolist() if n_fills else []
    at += n_fills * FILL_DTYPE.itemsize
    positions = np.frombuffer(payload, np.float64, n_symbols, at) if flags & PORTFOLIO else None
    return now, cash, flags, rows, fills, positions
