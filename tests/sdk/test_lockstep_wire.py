"""The lock-step wire on real pipes: frames split or coalesced by the pipe, big steps, and
the sandbox-side bar buffer (compaction keeps history right and holds nothing after now)."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from pitwall.context import Context
from pitwall.errors import StrategyOutputError
from pitwall.lockstep import (
    EMPTY_ORDERS_FRAME,
    HEADER,
    ORDERS,
    PORTFOLIO,
    ROWS_AT,
    STEP,
    STEP_BUFFER_BYTES,
    FrameReader,
    StepWriter,
    decode_orders,
    decode_step,
    orders_frame,
    write_all,
)
from pitwall.sandbox.event_loop import append_rows


def test_rows_start_aligned_and_an_empty_answer_is_one_constant_frame() -> None:
    assert ROWS_AT % 8 == 0
    r, w = os.pipe()
    try:
        write_all(w, orders_frame([], []))
        assert os.read(r, 1024) == EMPTY_ORDERS_FRAME
        write_all(w, orders_frame([(1, 0, 0, 5.0, float("nan"), float("nan"))], [7]))
        kind, payload = FrameReader(r, max_payload=1 << 20).read()
        orders, cancels = decode_orders(kind, payload, max_orders=10)
        assert kind == ORDERS and orders[0][:4] == (1, 0, 0, 5.0) and cancels == [7]
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("n_rows", [1, 3, 2000])  # 2000 × 5 × 30 × 8 B > the copy buffer
def test_step_frames_round_trip_whatever_the_pipe_does(n_rows: int) -> None:
    n_sym = 30
    rng = np.random.default_rng(1)
    cube = rng.random((n_rows, 5, n_sym))
    fills = [(3, 2, 10.0, 99.5, 0.1, 0.0)]
    positions = rng.random(n_sym)
    r, w = os.pipe()
    writer = StepWriter(w, n_sym, max_rows=n_rows)
    assert (n_rows * 5 * n_sym * 8 > STEP_BUFFER_BYTES) == (n_rows == 2000)
    frames: list[tuple[int, memoryview]] = []
    done = threading.Event()

    def read_all() -> None:  # a reader slower than the writer: frames arrive coalesced
        reader = FrameReader(r, max_payload=1 << 30, size=4096)
        done.wait(5)
        for _ in range(3):
            kind, payload = reader.read()
            frames.append((kind, memoryview(bytes(payload))))

    if n_rows == 2000:
        done.set()  # the writer blocks on the full pipe until the reader drains it
    t = threading.Thread(target=read_all)
    t.start()
    try:
        writer.send(11, cube, [], cash=5.0, positions=None, flags=1)
        writer.send(12, cube[-1:], fills, cash=6.0, positions=positions, flags=0)
        if n_rows < 2000:
            done.set()  # both frames are in the pipe already: one readv returns both
        writer.send(13, cube[:0], [], cash=7.0, positions=None, flags=4)
        done.set()
        t.join(10)
    finally:
        os.close(w)
        os.close(r)
    assert [k for k, _ in frames] == [STEP] * 3
    now, cash, flags, rows, got_fills, got_pos = decode_step(frames[0][1], n_sym)
    assert (now, cash, flags, got_fills, got_pos) == (11, 5.0, 1, [], None)
    assert np.array_equal(rows, cube)
    now, cash, flags, rows, got_fills, got_pos = decode_step(frames[1][1], n_sym)
    assert (now, cash, flags) == (12, 6.0, PORTFOLIO) and got_fills == fills
    assert got_pos is not None and np.array_equal(got_pos, positions)
    assert np.array_equal(rows, cube[-1:])
    now, cash, flags, rows, _, _ = decode_step(frames[2][1], n_sym)
    assert (now, cash, flags, rows.shape) == (13, 7.0, 4, (0, 5, n_sym))


def test_a_frame_split_into_pieces_is_reassembled() -> None:
    r, w = os.pipe()
    frame = HEADER.pack(b"PWL1", ORDERS, 8) + bytes(8)
    reader = FrameReader(r, max_payload=1 << 20)
    def trickle() -> None:  # the reader is blocked in readv between the pieces
        for piece in (frame[:3], frame[3:15], frame[15:]):
            time.sleep(0.05)
            os.write(w, piece)

    writer = threading.Thread(target=trickle)
    writer.start()
    try:
        kind, payload = reader.read()
        writer.join()
        assert kind == ORDERS and bytes(payload) == bytes(8)
        os.write(w, b"JUNKJUNKJUNKJUNK")
        with pytest.raises(StrategyOutputError, match="not a Pitwall frame"):
            reader.read()
    finally:
        os.close(r)
        os.close(w)


def test_a_step_frame_with_a_wrong_size_is_refused() -> None:
    r, w = os.pipe()
    try:
        StepWriter(w, 2, 4).send(1, np.ones((1, 5, 2)), [], cash=1.0, positions=None, flags=1)
        _, payload = FrameReader(r, max_payload=1 << 20).read()
        with pytest.raises(ValueError, match="wrong size"):
            decode_step(payload, 3)  # a feeder and strategy that disagree on the universe
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize(("lookback", "chunks"), [
    (1, [1] * 1100), (40, [40, *[1] * 1050, 7, 3]), (600, [600, *[1] * 700, 600, 5])])
def test_the_bar_buffer_compacts_without_losing_history_or_holding_the_future(
        lookback: int, chunks: list[int]) -> None:
    n_sym = 3
    rng = np.random.default_rng(2)
    total = sum(chunks)
    cube = rng.random((total, 5, n_sym))
    gaps = rng.random((total, n_sym)) < 0.2
    gaps[:, 2] = False
    cube[:, 3, :][gaps] = np.nan  # symbols without a bar at some timestamps
    cube[5:, 3, 2] = np.nan  # symbol 2 stops trading: its last close is at row 4
    buf = np.full((lookback + max(lookback, 1024), 5, n_sym), np.nan)
    ctx = Context(["A", "B", "C"], capital=1.0, lookback=lookback, data=buf)
    at = 0
    for k in chunks:
        append_rows(ctx, cube[at:at + k])
        at += k
        n = min(at, lookback)
        assert ctx.available == n
        assert np.array_equal(ctx.history("close", n), cube[at - n:at, 3], equal_nan=True)
        assert np.isnan(ctx._data[ctx._row + 1:]).all()  # nothing after now
        assert ctx.last_close()[2] == cube[min(at, 5) - 1, 3, 2]
