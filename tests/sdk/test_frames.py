"""The result channel framing: everything malformed is rejected, nothing is trusted."""

from __future__ import annotations

import io
import struct

import polars as pl
import pytest

from pitwall.errors import StrategyOutputError
from pitwall.frames import (
    HEADER_SIZE,
    MAGIC,
    FrameKind,
    decode_error,
    decode_frames,
    decode_result,
    encode_frame,
)


def weights_stream(**cols: list[object]) -> bytes:
    buf = io.BytesIO()
    pl.DataFrame(cols or {"ts": [1], "symbol": ["A"], "weight": [0.5]}).write_ipc_stream(buf)
    return buf.getvalue()


def test_round_trip_several_frames() -> None:
    data = encode_frame(FrameKind.PROGRESS, b"{}") + encode_frame(FrameKind.RESULT, b"abc")
    frames = decode_frames(data)
    assert [(f.kind, f.payload) for f in frames] == [(FrameKind.PROGRESS, b"{}"),
                                                     (FrameKind.RESULT, b"abc")]
    assert decode_frames(b"") == []
    assert encode_frame(FrameKind.RESULT, b"")[:4] == MAGIC
    assert len(encode_frame(FrameKind.RESULT, b"")) == HEADER_SIZE == 13


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"hello from a print()", "not a Pitwall frame"),
        (b"PWL1\x01\x00\x00", "inside a frame header"),
        (MAGIC + b"\x09" + struct.pack(">Q", 0), "unknown frame kind 9"),
        (MAGIC + b"\x01" + struct.pack(">Q", 2**63), "exceeds the limit"),
        (MAGIC + b"\x01" + struct.pack(">Q", 100) + b"short", "cut inside a frame"),
        (encode_frame(FrameKind.RESULT, b"ok") + b"junk", "inside a frame header"),
        (encode_frame(FrameKind.RESULT, b"ok") + b"x" * 20, "not a Pitwall frame"),
    ],
)
def test_malformed_input_is_rejected(data: bytes, match: str) -> None:
    with pytest.raises(StrategyOutputError, match=match):
        decode_frames(data)


def test_limits_on_frames_and_payloads() -> None:
    with pytest.raises(StrategyOutputError, match="more than 2 frames"):
        decode_frames(encode_frame(FrameKind.PROGRESS, b"") * 3, max_frames=2)
    with pytest.raises(StrategyOutputError, match="exceeds the limit of 4 bytes"):
        decode_frames(encode_frame(FrameKind.RESULT, b"12345"), max_payload=4)


def test_decode_result_checks_stream_and_columns() -> None:
    table = decode_result(weights_stream())
    assert table.num_rows == 1
    with pytest.raises(StrategyOutputError, match="not an Arrow IPC stream"):
        decode_result(b"\x80\x04pickle?")
    file_format = io.BytesIO()
    pl.DataFrame({"ts": [1], "symbol": ["A"], "weight": [0.5]}).write_ipc(file_format)
    with pytest.raises(StrategyOutputError, match="not an Arrow IPC stream"):
        decode_result(file_format.getvalue())
    with pytest.raises(StrategyOutputError, match="return exactly"):
        decode_result(weights_stream(ts=[1], symbol=["A"], w=[0.5]))


def test_decode_error() -> None:
    assert decode_error(b'{"error": "KeyError", "message": "x"}') == {
        "error": "KeyError", "message": "x"}
    for bad in (b"[1]", b'{"error": 1}', b"\xff", b"{" * 10):
        with pytest.raises(StrategyOutputError):
            decode_error(bad)
    with pytest.raises(StrategyOutputError, match="too large"):
        decode_error(b" " * 70_000)
