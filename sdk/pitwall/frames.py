"""The result channel between the sandboxed runner and the trusted worker.

A frame is ``b"PWL1"``, one kind byte, an 8-byte big-endian payload length, then the
payload. The runner writes frames to its original stdout; the worker decodes what the
sandbox printed with hard limits and trusts nothing: lengths are checked against the
buffer, payloads are Arrow IPC streams or small JSON, never pickles.

Example
-------
>>> data = encode_frame(FrameKind.ERROR, b'{"error": "ValueError"}')
>>> decode_frames(data)[0].kind
<FrameKind.ERROR: 2>
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from pitwall.errors import StrategyOutputError

if TYPE_CHECKING:
    import pyarrow as pa

MAGIC = b"PWL1"
_HEADER = struct.Struct(">4sBQ")
HEADER_SIZE = _HEADER.size  # 13
WEIGHTS_COLUMNS = ("ts", "symbol", "weight")


class FrameKind(IntEnum):
    """What a frame carries."""

    RESULT = 1  # an Arrow IPC stream of the strategy's output frame
    ERROR = 2  # JSON: {"error": type name, "message": str}
    PROGRESS = 3  # JSON, reserved for event-driven runs


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    kind: FrameKind
    payload: bytes


def encode_frame(kind: FrameKind, payload: bytes) -> bytes:
    """Frame ``payload``: magic, kind, 8-byte big-endian length, payload."""
    return _HEADER.pack(MAGIC, int(kind), len(payload)) + payload


def decode_frames(data: bytes, *, max_frames: int = 8, max_payload: int = 256 * 1024 * 1024,
                  ) -> list[Frame]:
    """Split ``data`` into frames; raise :class:`StrategyOutputError` on anything malformed.

    Every byte must belong to a frame: stray output on the channel is an error, as are
    unknown kinds, lengths beyond ``max_payload`` or beyond the buffer, and more than
    ``max_frames`` frames.
    """
    frames: list[Frame] = []
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        if len(frames) >= max_frames:
            raise StrategyOutputError(f"the result channel holds more than {max_frames} frames")
        if len(view) - pos < HEADER_SIZE:
            raise StrategyOutputError("the result channel ends inside a frame header")
        magic, kind, length = _HEADER.unpack_from(view, pos)
        if magic != MAGIC:
            raise StrategyOutputError(
                "the result channel holds bytes that are not a Pitwall frame "
                "(did something write to the original stdout?)"
            )
        try:
            frame_kind = FrameKind(kind)
        except ValueError:
            raise StrategyOutputError(f"unknown frame kind {kind} on the result channel") from None
        if length > max_payload:
            raise StrategyOutputError(
                f"a frame of {length} bytes exceeds the limit of {max_payload} bytes"
            )
        start = pos + HEADER_SIZE
        if length > len(view) - start:
            raise StrategyOutputError(
                "the result channel was cut inside a frame (truncated output?)"
            )
        frames.append(Frame(frame_kind, bytes(view[start : start + length])))
        pos = start + length
    return frames


def decode_result(payload: bytes, *, columns: tuple[str, ...] = WEIGHTS_COLUMNS) -> pa.Table:
    """Read a RESULT payload as an Arrow table; check it is one stream with ``columns``.

    Only the shape is checked here; the trusted engine validates types and content.
    """
    import pyarrow as pa

    try:
        reader = pa.ipc.open_stream(pa.py_buffer(payload))
        table = reader.read_all()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise StrategyOutputError(
            f"the strategy's result is not an Arrow IPC stream: {exc}"
        ) from None
    names = tuple(table.schema.names)
    if sorted(names) != sorted(columns):
        raise StrategyOutputError(
            f"the strategy returned columns {list(names)}; return exactly {list(columns)}"
        )
    return table


def decode_error(payload: bytes, *, max_bytes: int = 64 * 1024) -> dict[str, str]:
    """Read an ERROR payload: a small JSON object of strings (anything else is rejected)."""
    if len(payload) > max_bytes:
        raise StrategyOutputError(f"an error frame of {len(payload)} bytes is too large")
    try:
        obj: Any = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StrategyOutputError("an error frame is not JSON") from None
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in obj.items()
    ):
        raise StrategyOutputError("an error frame must be a JSON object of strings")
    return dict(obj)
