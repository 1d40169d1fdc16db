"""The trusted feeder of event mode: bars in, orders out, in lock-step (docs/architecture.md §1.2).

For each timestamp where the strategy is due (its schedule) or something of its filled,
the feeder writes ONE frame with the bars since the previous step (at most ``lookback``
of them, never one after ``now``), the fills and the portfolio, then blocks until it has
read the strategy's ONE answer before it looks at the next bar. Bars where nobody is due
and no order is open are skipped without a round trip; open orders are checked against
every bar by the trusted broker without waking the strategy unless they fill.

The broker, not the strategy, keeps the books: the strategy's answers are decisions,
validated (bounded counts, known types, symbols in the universe, finite quantities).
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pitwall.engine.broker import Broker, BrokerCosts
from pitwall.engine.event_corporate import EventActions
from pitwall.engine.event_members import Members
from pitwall.engine.event_result import EventResult, build_result
from pitwall.engine.fill_rules import FillRules
from pitwall.engine.market import CLOSE, Market
from pitwall.errors import StrategyOutputError
from pitwall.frames import decode_error
from pitwall.lane import NUDGE_FRAME, FeederLane
from pitwall.lockstep import (
    DUE,
    END,
    ERROR,
    FrameReader,
    StepWriter,
    decode_orders,
    decode_ready,
)
from pitwall.schedule import check_schedule, due_mask, next_due

#: The largest STEP frame the feeder will build (lookback × fields × symbols × 8 bytes).
MAX_STEP_BYTES = 512 * 1024 * 1024
#: Largest answer accepted from the strategy.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
#: Progress ticks per run; each carries the broker's mark-to-market equity at its bar.
PROGRESS_TICKS = 50


class StrategyStopped(Exception):
    """The strategy process ended or raised; its outcome says why (exit code, log)."""


@dataclass(frozen=True)
class FeedStats:
    """How the run went over the channel."""

    bars: int  # timestamps in the run
    round_trips: int  # STEP frames answered (READY excluded)
    seconds: float  # from READY to the END answer
    refused: int = 0  # orders the broker dropped (delisted, or outside the universe)
    lane_answers: int = 0  # answers that came through the shared-memory lane


def run_lockstep(stdin: BinaryIO, stdout: BinaryIO, market: Market, *, capital: float,
                 costs: BrokerCosts, max_participation: float | None = 0.1,
                 rules: FillRules | None = None, max_orders: int | None = None,
                 progress: Callable[[float, int, float], None] | None = None,
                 actions: EventActions | None = None, members: Members | None = None,
                 lane: Path | None = None) -> tuple[EventResult, FeedStats]:
    """Feed ``market`` to the strategy process behind the pipes; return the broker's result.

    ``stdin``/``stdout`` are the strategy process's pipes (a sandbox session's). Raises
    :class:`StrategyStopped` when the process raised or went away (read its outcome),
    :class:`StrategyOutputError` when it broke the protocol. ``progress(fraction, ts_ms,
    equity)`` is called about :data:`PROGRESS_TICKS` times with the equity at that bar.
    ``rules``: the spec's fill model (docs/engine-conventions.md §2.3), which replaces
    ``max_participation`` with its own cap. ``actions``: the corporate actions laid on
    ``market`` (:mod:`pitwall.engine.event_corporate`), applied to the book as their
    bars come; the strategy gets its new positions and cash with its next step.
    ``members``: a universe rule's members (:mod:`pitwall.engine.event_members`): orders
    for other symbols are dropped, and a symbol that leaves is closed by the broker.
    ``lane``: the shared-memory lane's file (:mod:`pitwall.lane`, made with spins > 0):
    the steps and answers go through it, the pipes carry the rest.
    """
    reader = FrameReader(stdout.fileno(), max_payload=MAX_ANSWER_BYTES)
    out = stdin.fileno()
    channel: FeederLane | FramePipe = (FeederLane(lane, reader, out) if lane is not None
                                       else FramePipe(reader))
    n_sym = len(market.symbols)
    try:
        kind, payload = reader.read()
        _check_error(kind, payload)
        try:
            sched = check_schedule(decode_ready(kind, payload))
        except ValueError as exc:
            raise StrategyOutputError(f"the strategy's schedule is invalid: {exc}") from None
        lookback = min(sched["lookback"], len(market))
        if lookback * len(market.fields) * n_sym * 8 > MAX_STEP_BYTES:
            raise StrategyOutputError(f"lookback={lookback} × {n_sym} symbols is too much "
                                      "history per step; lower the strategy's lookback")
        due = due_mask(market.ts, every=sched["every"], at=sched["at"],
                       timezone=sched["timezone"])
        broker = Broker(n_sym, capital=capital, costs=costs, max_participation=max_participation,
                        rules=rules)
        limit = max_orders or max(1000, 10 * n_sym)
        started = time.perf_counter()
        tick = _ticker(market, broker, progress) if progress is not None else None
        trips = _feed(channel, out, market, broker, due.tolist(), next_due(due), lookback,
                      limit, tick, actions, members)
        stats = FeedStats(len(market), trips, time.perf_counter() - started, broker.refused,
                          channel.lane_answers)
    except (EOFError, BrokenPipeError) as exc:
        raise StrategyStopped(f"the strategy process went away ({exc})") from None
    finally:
        channel.close()
    return build_result(market, broker, actions.report() if actions else None), stats


def _check_error(kind: int, payload: memoryview) -> None:
    if kind == ERROR:
        try:
            err = decode_error(bytes(payload))
            what = f"{err.get('error', '?')}: {err.get('message', '')}"
        except StrategyOutputError:
            what = "an unreadable error"
        raise StrategyStopped(f"the strategy raised {what[:500]}")


class FramePipe:
    """The strategy's answers over its stdout alone (no lane)."""

    lane_answers = 0

    def __init__(self, reader: FrameReader) -> None:
        self.reader = reader
        self.read = reader.read
        self.pending = reader.pending

    def close(self) -> None:
        """Nothing to release: the pipes are the session's."""


def _feed(channel: FeederLane | FramePipe, out: int, market: Market, broker: Broker,
          due: list[bool],
          nxt: list[int], lookback: int, max_orders: int,
          progress: Callable[[int], None] | None, actions: EventActions | None,
          members: Members | None) -> int:
    """The lock-step loop; returns the number of round trips."""
    data, ts, n = market.data, market.ts.tolist(), len(market)
    send_step = StepWriter(out, len(market.symbols), lookback,  # one write per step
                           len(market.fields),
                           channel if isinstance(channel, FeederLane) else None).send
    upcoming = actions.next if actions is not None else n  # the next corporate action
    leaving = members.next if members is not None else n  # the next universe exit
    outside = members.outside if members is not None else None
    read = channel.read
    sent = 0  # rows [0, sent) are with the strategy
    trips = 0
    report_every = max(n // PROGRESS_TICKS, 1)
    next_report = report_every
    t = nxt[0]
    while t < n:
        if t >= upcoming and actions is not None:
            actions.catch_up(broker, t)
            upcoming = actions.next
        fills = broker.execute(t, data[t]) if broker.open else []
        if t >= leaving and members is not None:
            members.leave(broker, t)
            leaving = members.next
        if fills or due[t]:
            rows = data[max(sent, t + 1 - lookback):t + 1]
            send_step(ts[t], rows, fills, cash=broker.cash,
                      positions=broker.positions if fills or broker.changed else None,
                      flags=DUE if due[t] else 0)
            broker.changed = False
            sent = t + 1
            trips += 1
            kind, payload = read()
            _check_error(kind, payload)
            _check_turn(channel)
            orders, cancels = decode_orders(kind, payload, max_orders=max_orders)
            if orders or cancels:
                broker.submit(orders, cancels, outside[t] if outside is not None else None)
        if progress is not None and t >= next_report:
            progress(t)
            next_report = t + report_every
        t = t + 1 if broker.open else min(nxt[t + 1], upcoming, leaving)
    if actions is not None:
        actions.catch_up(broker, n - 1)
    rows = data[max(sent, n - lookback):n]
    send_step(ts[-1], rows, [], cash=broker.cash, positions=broker.positions, flags=END)
    kind, payload = read()
    _check_error(kind, payload)
    decode_orders(kind, payload, max_orders=max_orders)  # on_end's orders are never filled
    _check_turn(channel, drain_s=END_DRAIN_S)
    return trips


#: After its last answer the strategy process exits; bytes it sends in this time were
#: sent out of turn.
END_DRAIN_S = 2.0


def _check_turn(channel: FeederLane | FramePipe, *, drain_s: float = 0.0) -> None:
    """One answer per step: a byte of another frame already here (or, at the end, before
    the channel closes within ``drain_s``) is an answer out of turn, a protocol violation.
    The lane's stale wake-ups (:data:`~pitwall.lane.NUDGE_FRAME`) are not answers."""
    extra = channel.pending()
    fd = channel.reader.fd
    deadline = time.monotonic() + drain_s
    while not extra and drain_s:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break  # the channel closed: nothing was sent out of turn
        extra = len(chunk.replace(NUDGE_FRAME, b""))
    if extra:
        raise StrategyOutputError("the strategy answered out of turn (a frame it was not "
                                  "asked for); answer each bar exactly once")


def _ticker(market: Market, broker: Broker,
            progress: Callable[[float, int, float], None]) -> Callable[[int], None]:
    """``tick(t)`` reports the fraction done, bar ``t``'s time (ms since the epoch) and the
    broker's equity marked at the last known closes (the marks of the final equity curve);
    the closes are folded in incrementally, O(symbols × bars) over the whole run."""
    close = market.data[:, CLOSE, :]
    last = np.zeros(close.shape[1])
    seen = 0  # closes [0, seen) are folded into ``last``
    n = len(market)

    def tick(t: int) -> None:
        nonlocal seen
        chunk = close[seen:t + 1]
        valid = ~np.isnan(chunk)
        cols = np.flatnonzero(valid.any(axis=0))
        if cols.size:
            rows = len(chunk) - 1 - np.argmax(valid[::-1], axis=0)
            last[cols] = chunk[rows[cols], cols]
        seen = t + 1
        progress(t / n, int(market.ts[t]) // 1000, broker.equity(last))

    return tick


def watchdog(deadline_s: float, kill: Callable[[], Any]) -> Callable[[], bool]:
    """Kill the session after ``deadline_s`` unless cancelled; returns ``cancel()`` that
    says whether the deadline had already passed (the read then failed because of it)."""
    import threading

    fired = threading.Event()

    def fire() -> None:
        fired.set()
        kill()

    timer = threading.Timer(deadline_s, fire)
    timer.daemon = True
    timer.start()

    def cancel() -> bool:
        timer.cancel()
        return fired.is_set()

    return cancel
