"""The shared-memory lane (pitwall.lane) between two host processes: frames through the
lane and, when too large, through the pipe; the sleeping side woken by a NUDGE; stale
NUDGEs never taken for an answer. (The lane inside gVisor: tests/execution/test_lane_gvisor.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pitwall import lane
from pitwall.errors import StrategyOutputError
from pitwall.lockstep import HEADER, MAGIC, FrameReader, write_all

# The strategy's side: answer each frame with its kind + 100 and its first 64 bytes.
ECHO = r'''
import sys
from pitwall import lane
from pitwall.lockstep import HEADER, MAGIC, FrameReader
path, spins = sys.argv[1], int(sys.argv[2])
side = lane.StrategyLane(path, FrameReader(0, max_payload=1 << 26), 1)
side.spins = spins
while True:
    try:
        kind, payload = side.read()
    except EOFError:
        break
    body = bytes(payload[:64])
    side.write(HEADER.pack(MAGIC, kind + 100, len(body)) + body)
'''


def frame(kind: int, body: bytes) -> bytes:
    return HEADER.pack(MAGIC, kind, len(body)) + body


@pytest.fixture
def echo(tmp_path: Path):  # type: ignore[no-untyped-def]
    def start(spins: int) -> tuple[subprocess.Popen[bytes], lane.FeederLane]:
        path = lane.create(tmp_path, spins=max(spins, 1))
        sdk = str(Path(lane.__file__).parents[1])
        proc = subprocess.Popen([sys.executable, "-c", ECHO, str(path), str(spins)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": sdk})
        assert proc.stdin is not None and proc.stdout is not None
        reader = FrameReader(proc.stdout.fileno(), max_payload=1 << 20)
        return proc, lane.FeederLane(path, reader, proc.stdin.fileno())
    procs: list[subprocess.Popen[bytes]] = []

    def started(spins: int) -> lane.FeederLane:
        proc, feeder = start(spins)
        procs.append(proc)
        return feeder
    yield started
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=10)


def test_frames_go_through_the_lane_or_the_pipe_and_come_back_in_order(echo) -> None:  # type: ignore[no-untyped-def]
    feeder = echo(20_000)
    bodies = [b"a" * 10, b"b" * (lane.STEP_CAP + 1), b"c" * 100, b"d" * 3]
    for i, body in enumerate(bodies):
        whole = frame(16, body)
        if not feeder.send(whole):  # too large for the lane: the pipe carries it
            assert len(whole) > lane.STEP_CAP
            write_all(feeder.out, whole)
        kind, payload = feeder.read()
        assert (kind, bytes(payload)) == (116, body[:64]), i
    assert feeder.lane_answers == 4  # every answer was small: all through the lane
    assert feeder.pending() == 0


def test_a_sleeping_side_is_woken_and_stale_nudges_are_not_answers(echo) -> None:  # type: ignore[no-untyped-def]
    feeder = echo(1)  # looks once, then sleeps on its pipe
    for i in range(20):
        time.sleep(0.005)  # long enough that the other side is asleep
        assert feeder.send(frame(16, bytes([i]) * 8))
        kind, payload = feeder.read()
        assert (kind, bytes(payload)) == (116, bytes([i]) * 8)
    assert feeder.lane_answers == 20 and feeder.pending() == 0


def test_stale_nudges_are_skipped_and_never_count_as_an_answer(tmp_path: Path) -> None:
    path = lane.create(tmp_path, spins=1)
    r, w = os.pipe()
    feeder = lane.FeederLane(path, FrameReader(r, max_payload=1 << 20), w)
    # Two wake-ups the strategy sent while the feeder was not asleep, then its error frame
    # over the pipe: the feeder skips the wake-ups and returns the frame.
    os.write(w, lane.NUDGE_FRAME * 2 + frame(2, b'{"error": "E", "message": "m"}'))
    kind, payload = feeder.read()
    assert (kind, bytes(payload)) == (2, b'{"error": "E", "message": "m"}')
    os.write(w, lane.NUDGE_FRAME)  # a stale one only: no answer is pending
    assert feeder.pending() == 0
    feeder.close()


def test_a_forged_answer_in_the_lane_is_refused_not_trusted(tmp_path: Path) -> None:
    path = lane.create(tmp_path, spins=1)
    r, w = os.pipe()
    feeder = lane.FeederLane(path, FrameReader(r, max_payload=1 << 20), w)
    with open(path, "r+b") as f:  # the strategy's side, hostile: a header claiming 1 TB
        f.seek(lane.ANSWER_AT)
        f.write(HEADER.pack(MAGIC, 18, 1 << 40))
        f.seek(lane.STRATEGY_SEQ)
        f.write(lane.WORD.pack(1))
    with pytest.raises(StrategyOutputError, match="not a Pitwall frame"):
        feeder.read()
    os.truncate(path, 100)  # cut short: the worker reads, it never maps, so no fault
    with open(path, "r+b") as f:
        f.seek(lane.STRATEGY_SEQ)
        f.write(lane.WORD.pack(2))
    with pytest.raises(StrategyOutputError):
        feeder.read()
    feeder.close()


def test_an_answer_out_of_turn_in_the_lane_is_a_protocol_error(tmp_path: Path) -> None:
    path = lane.create(tmp_path, spins=1)
    r, w = os.pipe()
    feeder = lane.FeederLane(path, FrameReader(r, max_payload=1 << 20), w)
    with open(path, "r+b") as f:  # two answers' worth of sequence at once
        f.seek(lane.STRATEGY_SEQ)
        f.write(lane.WORD.pack(2))
    with pytest.raises(StrategyOutputError, match="out of turn"):
        feeder.read()
    feeder.close()
