"""The shared-memory lane of the lock-step channel (docs/architecture.md §1.2, "The lane").

Through gVisor a round trip over the pipes costs a trapped ``readv`` and ``write`` on the
strategy's side plus the Sentry's wake-up of a blocked reader: tens of µs, more than the
whole step's work. The lane carries the same frames through one small file that the
worker and the sandbox both map (a bind mount of ``/job/channel``; gVisor maps the host
file's pages into the sandbox, so both sides see the same memory): the sender copies a
frame into its region and then bumps its sequence number; the receiver, which knows a
frame is due (lock-step: one per direction per step), watches that number for a bounded
while and only then sleeps on the pipe. Point in time is unchanged: the worker still
writes bar ``t + 1`` only after it has read the answer to bar ``t``.

The file (little-endian int64 words, each on its own cache line, then two regions):

* ``FEEDER_SEQ`` / ``STRATEGY_SEQ``: frames sent through the lane by each side, so far;
* ``FEEDER_WAITS`` / ``STRATEGY_WAITS``: 1 while that side sleeps on its pipe: the other
  side, after publishing, then also writes a :data:`NUDGE` frame to the pipe;
* ``STRATEGY_SPINS``: how many times the strategy's side looks before it sleeps, set by
  the worker before the sandbox starts (0: the lane is off and the pipes carry every
  frame, as when the pair shares one CPU, where watching would starve the peer);
* ``STEP_AT``: the feeder's region (one STEP frame), ``ANSWER_AT``: the strategy's.

A frame larger than its region goes over the pipe as before; so does a strategy's error.
A published number is written after its frame, and a sleeper's flag and the peer's number
are each read after a full fence on the writer's side (an atomic instruction: a lock's
acquire and release), so one of the two sides always sees the other (no lost wake-up);
the worker also re-checks every few ms while it sleeps. A stale :data:`NUDGE` (the
sleeper found the frame itself) is skipped by the reader.

Trust: the worker never maps the file. It reads and writes it with ``pread``/``pwrite``,
so a hostile strategy that truncates or rewrites it cannot fault the worker; an answer is
copied out before it is checked (sizes bounded, then decoded like a pipe frame).
"""

from __future__ import annotations

import mmap
import os
import select
import struct
import threading
import time
from pathlib import Path

from pitwall.errors import StrategyOutputError
from pitwall.lockstep import HEADER, MAGIC, ORDERS, FrameReader, write_all

FEEDER_SEQ, STRATEGY_SEQ, FEEDER_WAITS, STRATEGY_WAITS, STRATEGY_SPINS = (
    0, 64, 128, 192, 256)
STEP_AT = 4096
STEP_CAP = (1 << 20) + 4096  # a StepWriter buffer's frame (pitwall.lockstep) fits
ANSWER_AT = STEP_AT + STEP_CAP
ANSWER_CAP = 64 * 1024
SIZE = ANSWER_AT + ANSWER_CAP
#: The lane's file inside the sandbox (the job's ``channel`` dir, mounted read-write).
SANDBOX_PATH = "/job/channel/lane"
FILE_NAME = "lane"

NUDGE = 19  # frame kind: "look at the lane"; no payload
NUDGE_FRAME = HEADER.pack(MAGIC, NUDGE, 0)
WORD = struct.Struct("<q")
ONE, ZERO = WORD.pack(1), WORD.pack(0)

#: The strategy's side: looks at the lane this many times before it sleeps (~30 ns each).
STRATEGY_SPINS_DEFAULT = 20_000
#: The worker's side: watches at most this long before it sleeps, halved after each wait
#: that outlasted it (a slow strategy) and doubled back after each that did not.
FEEDER_SPIN_S = 200e-6
FEEDER_SPIN_MIN_S = 5e-6
#: While it sleeps the worker re-checks the lane this often (a backstop, never needed).
RECHECK_S = 0.005

_fence_lock = threading.Lock()


def fence() -> None:
    """A full memory fence: an uncontended lock's acquire and release are atomic
    read-modify-write instructions, which order every store before every later load."""
    _fence_lock.acquire()
    _fence_lock.release()


def create(directory: Path, *, spins: int) -> Path:
    """The lane's file in ``directory`` (the job's ``channel`` dir), zeroed, writable by
    the sandbox's user; ``spins`` 0 turns the lane off (pipes only)."""
    path = directory / FILE_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, SIZE)
        os.pwrite(fd, WORD.pack(spins), STRATEGY_SPINS)
        os.fchmod(fd, 0o666)
    finally:
        os.close(fd)
    return path


class FeederLane:
    """The worker's end: STEP frames out, answers in, through the lane or the pipes."""

    def __init__(self, path: Path, reader: FrameReader, out: int) -> None:
        self.fd = os.open(path, os.O_RDWR)
        self.reader = reader  # the strategy's stdout
        self.out = out  # the strategy's stdin
        self.sent = 0
        self.got = 0
        self.spin_s = FEEDER_SPIN_S
        self.lane_answers = 0  # answers that came through the lane (bench, tests)

    def close(self) -> None:
        os.close(self.fd)

    def send(self, frame: memoryview | bytes) -> bool:
        """Publish one whole frame in the lane; False when it does not fit (use the pipe)."""
        if len(frame) > STEP_CAP:
            return False
        os.pwrite(self.fd, frame, STEP_AT)
        self.sent += 1
        os.pwrite(self.fd, WORD.pack(self.sent), FEEDER_SEQ)
        fence()
        if os.pread(self.fd, 8, STRATEGY_WAITS) != ZERO:
            self._nudge()
        return True

    def _nudge(self) -> None:
        """Wake the strategy's side: a NUDGE on its pipe, unless the pipe is full (of
        wake-ups it has not read: a strategy that claims to sleep while it watches must
        not block the worker on a full pipe)."""
        if select.select([], [self.out], [], 0)[1]:  # writable: room for PIPE_BUF bytes
            write_all(self.out, NUDGE_FRAME)

    def _arrived(self) -> bool:
        """Whether the next answer is in the lane; a number that is neither the last one
        nor the next is a protocol violation (an answer out of turn)."""
        seen = os.pread(self.fd, 8, STRATEGY_SEQ)
        if seen == WORD.pack(self.got + 1):
            return True
        if seen != WORD.pack(self.got) and len(seen) == 8:
            raise StrategyOutputError("the strategy answered out of turn in the lane (a "
                                      "frame it was not asked for); answer each bar once")
        return False

    def read(self) -> tuple[int, memoryview]:
        """The strategy's next frame, from the lane or (an error, a large answer) the pipe."""
        if self._watch():
            return self._take()
        os.pwrite(self.fd, ONE, FEEDER_WAITS)
        fence()
        try:
            while True:
                if self._arrived():
                    return self._take()
                if self.reader.drop_leading(NUDGE_FRAME) or select.select(
                        [self.reader.fd], [], [], RECHECK_S)[0]:
                    kind, payload = self.reader.read()
                    if kind == ORDERS and HEADER.size + len(payload) <= ANSWER_CAP:
                        # The runner sends an answer that fits through the lane, never
                        # the pipe: this one was written beside it, out of turn.
                        raise StrategyOutputError(
                            "the strategy answered out of turn (a frame it was not asked "
                            "for, on its pipe); answer each bar exactly once")
                    if kind != NUDGE:
                        return kind, payload
                elif os.pread(self.fd, 8, STRATEGY_WAITS) != ZERO:
                    self._nudge()  # it sleeps with our frame published
        finally:
            os.pwrite(self.fd, ZERO, FEEDER_WAITS)

    def _watch(self) -> bool:
        want = WORD.pack(self.got + 1)
        fd, pread = self.fd, os.pread
        if pread(fd, 8, STRATEGY_SEQ) == want:
            return True
        deadline = time.perf_counter() + self.spin_s
        while time.perf_counter() < deadline:
            for _ in range(16):
                if pread(fd, 8, STRATEGY_SEQ) == want:
                    self.spin_s = min(self.spin_s * 2, FEEDER_SPIN_S)
                    return True
        self.spin_s = max(self.spin_s / 2, FEEDER_SPIN_MIN_S)
        return False

    def _take(self) -> tuple[int, memoryview]:
        """Copy the answer out of the lane, then check it (the strategy may still write)."""
        self.got += 1
        self.lane_answers += 1
        head = os.pread(self.fd, 4096, ANSWER_AT)
        if len(head) < HEADER.size:
            raise StrategyOutputError("the lane's file was cut short by the strategy")
        magic, kind, length = HEADER.unpack_from(head)
        if magic != MAGIC or length > ANSWER_CAP - HEADER.size:
            raise StrategyOutputError("the lane holds an answer that is not a Pitwall frame")
        end = HEADER.size + length
        data = head if end <= len(head) else os.pread(self.fd, end, ANSWER_AT)
        if len(data) < end:
            raise StrategyOutputError("the lane's file was cut short by the strategy")
        return kind, memoryview(data)[HEADER.size:end]

    def pending(self) -> int:
        """Bytes of a frame other than a NUDGE already in the pipe (an answer out of turn)."""
        return self.reader.drop_leading(NUDGE_FRAME)


class StrategyLane:
    """The sandbox's end: STEP frames in (views of the lane, valid until the answer),
    answers out, through the lane when its spins are not 0."""

    def __init__(self, path: str, reader: FrameReader, out: int) -> None:
        with open(path, "r+b") as f:
            self._map = mmap.mmap(f.fileno(), SIZE)
        self._words = memoryview(self._map).cast("q")
        self._view = memoryview(self._map)
        self.reader = reader
        self.out = out
        self.got = 0
        self.sent = 0
        self.spins = max(0, min(int(self._words[STRATEGY_SPINS // 8]), 10_000_000))

    @property
    def on(self) -> bool:
        return self.spins > 0

    def read(self) -> tuple[int, memoryview]:
        """The feeder's next frame (a view of the lane, or of the pipe reader's buffer)."""
        if not self.spins:
            return self.reader.read()
        words, at, want = self._words, FEEDER_SEQ // 8, self.got + 1
        for _ in range(self.spins):
            if words[at] == want:
                return self._take()
        words[STRATEGY_WAITS // 8] = 1
        fence()
        try:
            while True:
                if words[at] == want:
                    return self._take()
                kind, payload = self.reader.read()
                if kind != NUDGE:
                    return kind, payload
        finally:
            words[STRATEGY_WAITS // 8] = 0

    def _take(self) -> tuple[int, memoryview]:
        self.got += 1
        magic, kind, length = HEADER.unpack_from(self._map, STEP_AT)
        start = STEP_AT + HEADER.size
        if magic != MAGIC or length > STEP_CAP - HEADER.size:
            raise RuntimeError("the lane holds a frame that is not a Pitwall frame")
        return kind, self._view[start:start + length]

    def write(self, frame: bytes | memoryview) -> None:
        """Send one whole frame: through the lane when it fits, else the pipe."""
        n = len(frame)
        if n > ANSWER_CAP or not self.spins:
            write_all(self.out, frame)
            return
        self._view[ANSWER_AT:ANSWER_AT + n] = frame
        self.sent += 1
        self._words[STRATEGY_SEQ // 8] = self.sent
        fence()
        if self._words[FEEDER_WAITS // 8]:
            write_all(self.out, NUDGE_FRAME)
