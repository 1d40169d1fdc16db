"""The in-sandbox half of the lookahead audit: re-run the strategy on truncated frames.

The trusted worker picks the cut timestamps (``pitwall.engine.audit.choose_cuts``) and
lists them in ``spec.json`` under ``"audit"``. After the full run's RESULT frame, the
runner calls the strategy again on ``bars[ts <= cut]`` for each cut, in the listed order,
and writes exactly one frame per cut: a RESULT frame with the weights, or an ERROR frame
(``{"error", "message"}``) when the strategy raised or the cut was skipped to stay within
the job's output or time budget. The trusted side decodes and compares them; nothing is
decided here, so a strategy that tampers with this module only hides its own leak.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import polars as pl

from pitwall.frames import FrameKind, encode_frame

#: ``error`` of the ERROR frame written for a cut that was not run.
SKIPPED = "AuditSkipped"
# Room kept for the small ERROR frames of the cuts that follow a skipped one.
_ERROR_HEADROOM = 64 * 1024
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# The real monotonic clock, captured before the simulated clock is installed.
_monotonic = time.monotonic


@dataclass(frozen=True)
class AuditPlan:
    """What ``spec.json`` asks: cut timestamps (µs since the epoch, UTC) and the budgets."""

    cuts: tuple[int, ...]
    max_bytes: int  # for everything the runner writes to the channel, full run included
    max_seconds: float  # from the runner's start to the end of the last re-run

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> AuditPlan | None:
        """The plan in ``spec["audit"]``, or None when the job has no audit."""
        raw = spec.get("audit")
        if not isinstance(raw, dict) or not raw.get("cuts"):
            return None
        return cls(cuts=tuple(int(c) for c in raw["cuts"]), max_bytes=int(raw["max_bytes"]),
                   max_seconds=float(raw["max_seconds"]))


def cut_datetime(cut_us: int) -> dt.datetime:
    """A cut as an aware UTC datetime."""
    return _EPOCH + dt.timedelta(microseconds=cut_us)


def run_cuts(
    plan: AuditPlan,
    bars: pl.DataFrame,
    call: Callable[[pl.DataFrame], bytes],
    channel: IO[bytes],
    *,
    started: float,
    full_seconds: float,
    used_bytes: int,
) -> None:
    """Write one frame per cut of ``plan`` to ``channel``; never raises for the strategy.

    ``call`` runs the strategy on a frame (re-seeded, clock set) and returns its Arrow
    IPC bytes. A cut is skipped when its estimated time (the full run's, scaled by its
    share of rows, plus half again) would pass ``plan.max_seconds``, or when its result
    would pass ``plan.max_bytes``.
    """
    for cut in plan.cuts:
        truncated = bars.filter(pl.col("ts") <= cut_datetime(cut))
        share = truncated.height / max(bars.height, 1)
        elapsed = _monotonic() - started
        if elapsed + 1.5 * share * full_seconds > plan.max_seconds:
            frame = _error(SKIPPED, "skipped: re-running would pass the audit's time budget")
        else:
            try:
                payload = call(truncated)
            except BaseException as exc:  # the strategy may raise anything
                frame = _error(type(exc).__name__, str(exc)[:2000])
            else:
                frame = encode_frame(FrameKind.RESULT, payload)
                if used_bytes + len(frame) + _ERROR_HEADROOM > plan.max_bytes:
                    frame = _error(SKIPPED, "skipped: the result would pass the output limit")
        del truncated
        channel.write(frame)
        channel.flush()
        used_bytes += len(frame)


def _error(kind: str, message: str) -> bytes:
    body = json.dumps({"error": kind, "message": message}).encode()
    return encode_frame(FrameKind.ERROR, body)
