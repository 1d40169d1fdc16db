"""Reading what a sandbox printed on its result channel: bounded, schema-checked, no pickle."""

from __future__ import annotations

import pyarrow as pa

from pitwall.errors import StrategyOutputError
from pitwall.frames import FrameKind, decode_error, decode_frames, decode_result


def decode_weights(stdout: bytes, *, max_bytes: int) -> pa.Table:
    """The weights table of a successful run; :class:`StrategyOutputError` otherwise."""
    if len(stdout) > max_bytes:
        raise StrategyOutputError(f"the strategy's result exceeds {max_bytes} bytes; "
                                  "return one row per (ts, symbol) you trade, not more")
    frames = decode_frames(stdout, max_payload=max_bytes)
    results = [f for f in frames if f.kind is FrameKind.RESULT]
    errors = [f for f in frames if f.kind is FrameKind.ERROR]
    if errors:
        err = decode_error(errors[0].payload)
        raise StrategyOutputError(f"{err.get('error', 'error')}: {err.get('message', '')}")
    if len(results) != 1:
        raise StrategyOutputError(f"the strategy produced {len(results)} results; expected one "
                                  "(did it return a frame of weights?)")
    return decode_result(results[0].payload)
