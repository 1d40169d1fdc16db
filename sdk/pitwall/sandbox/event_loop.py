"""The sandbox side of event mode: ``python -m pitwall.sandbox.runner /job`` with ``kind: event``.

Loads the strategy class from the bundle, announces its schedule (READY), then serves
the lock-step loop: read one STEP (the bars since the last step, fills, portfolio),
call the callbacks, answer with one ORDERS frame. The process only ever holds bars up
to ``now``: the trusted feeder sends the next step after it has read these orders.
Bars live in a fixed buffer of ``lookback + max(lookback, 1024)`` rows, compacted when
full, so memory does not grow with the length of the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from pitwall import lane
from pitwall.context import FIELDS, Context
from pitwall.event_strategy import Strategy
from pitwall.lockstep import (
    DUE,
    EMPTY_ORDERS_FRAME,
    END,
    READY,
    STEP,
    FrameReader,
    decode_step,
    orders_frame,
    write_all,
    write_frame,
)
from pitwall.sandbox.clock import SimulatedClock
from pitwall.sandbox.loader import load_event_strategy, seed_everything

MAX_STEP_BYTES = 1 << 30
_CLOSE = 3


def _last_valid_close(block: npt.NDArray[np.float64], base: npt.NDArray[np.float64]) -> None:
    """Overwrite ``base`` with each symbol's last non-NaN close in ``block`` (if any)."""
    fresh = np.full(len(base), np.nan)
    for row in block[::-1, _CLOSE]:
        gaps = np.isnan(fresh)
        if not gaps.any():
            break
        fresh[gaps] = row[gaps]
    seen = ~np.isnan(fresh)
    base[seen] = fresh[seen]


def append_rows(ctx: Context, rows: npt.NDArray[np.float64]) -> None:
    """Append bars to the context's buffer, keeping at least ``lookback`` rows.

    Usually one copy into free rows; when the buffer is full it is compacted to its last
    ``lookback - k`` rows first (the closes of the rows dropped are kept for
    ``last_close``) and the freed rows are reset to NaN: nothing after ``now`` is held.
    """
    k = len(rows)
    if k == 0:
        return
    buf, end = ctx._data, ctx._row + 1
    if end + k <= len(buf):  # the usual case
        buf[end:end + k] = rows
        ctx._row = end + k - 1
        return
    lookback = ctx.lookback
    if k >= lookback:
        _last_valid_close(buf[:end], ctx._base_close)
        _last_valid_close(rows[:k - lookback], ctx._base_close)
        buf[:lookback] = rows[k - lookback:]
        buf[lookback:] = np.nan
        ctx._dropped += end + k - lookback
        ctx._row = lookback - 1
        return
    keep = min(end, lookback - k)
    _last_valid_close(buf[:end - keep], ctx._base_close)
    buf[:keep] = buf[end - keep:end].copy()
    buf[keep:keep + k] = rows
    buf[keep + k:] = np.nan
    ctx._dropped += end - keep
    ctx._row = keep + k - 1


def serve(job: Path, channel: IO[bytes], *, in_fd: int = 0) -> None:
    """Run the lock-step loop until the feeder's END step; exceptions propagate."""
    spec: dict[str, Any] = json.loads((job / "input" / "spec.json").read_text())
    seed_everything(int(spec.get("seed", 0)))
    clock = SimulatedClock()  # time.time()/datetime.now() read the bar's time (determinism)
    clock.install()
    cls = load_event_strategy(job / "bundle", str(spec["entrypoint"]))
    strategy = cls(**dict(spec.get("params") or {}))
    schedule = strategy.schedule()
    symbols = [str(s) for s in spec["symbols"]]
    # OHLCV, then the run's extra fields (the adjusted prices on reference data).
    fields = (*FIELDS, *(str(f) for f in spec.get("extra_fields", ())))
    lookback = int(schedule["lookback"])
    # np.full touches every page now: a page fault inside gVisor (ptrace) is expensive.
    buf = np.full((lookback + max(lookback, 1024), len(fields), len(symbols)), np.nan)
    ctx = Context(symbols, capital=float(spec["capital"]), lookback=lookback, data=buf,
                  fields=fields)
    strategy.on_start(ctx)
    if ctx._pending:
        raise RuntimeError("on_start placed orders; place orders in on_bar")
    channel.flush()
    out = channel.fileno()
    write_frame(out, READY, json.dumps(schedule).encode())
    reader = FrameReader(in_fd, max_payload=MAX_STEP_BYTES)
    if Path(lane.SANDBOX_PATH).exists():  # the worker's shared-memory lane (pitwall.lane)
        channel_lane = lane.StrategyLane(lane.SANDBOX_PATH, reader, out)
        if channel_lane.on:
            _loop(strategy, ctx, channel_lane.read, channel_lane.write, clock)
            return
    _loop(strategy, ctx, reader.read, lambda frame: write_all(out, frame), clock)


def _loop(strategy: Strategy, ctx: Context, read: Callable[[], tuple[int, memoryview]],
          answer: Callable[[bytes], None], clock: SimulatedClock) -> None:
    """One STEP in, the callbacks, one ORDERS out: through the lane, no syscall at all;
    over the pipes, one ``readv`` and one ``write``.

    No other syscall per step: the simulated clock is a number set here, nothing is
    allocated beyond small views, and a step without orders writes a constant frame.
    """
    n, n_fields = len(ctx.symbols), len(ctx.fields)
    portfolio = ctx.portfolio
    on_bar, on_fill = strategy.on_bar, strategy.on_fill
    while True:
        kind, payload = read()
        if kind != STEP:
            raise RuntimeError(f"unexpected frame kind {kind} from the feeder")
        now, cash, flags, rows, fills, positions = decode_step(payload, n, n_fields)
        append_rows(ctx, rows)
        ctx.ts = now
        clock._now_ns = now * 1000  # time.time()/datetime.now() = this bar's ts
        if positions is not None:
            portfolio.cash = cash
            portfolio.positions = positions.copy()
        if fills:
            for fill in ctx._fills(fills):
                on_fill(ctx, fill)
        if flags & END:
            strategy.on_end(ctx)
            answer(EMPTY_ORDERS_FRAME)
            return
        if flags & DUE:
            on_bar(ctx)
        if ctx._pending or ctx._cancels:
            answer(orders_frame(*ctx._take_orders()))
        else:
            answer(EMPTY_ORDERS_FRAME)
