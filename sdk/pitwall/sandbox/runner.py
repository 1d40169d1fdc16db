"""The in-sandbox runner (untrusted side): ``python -m pitwall.sandbox.runner /job``.

Reads ``/job/input/spec.json`` (``entrypoint``, ``params``, ``seed``), the strategy in
``/job/bundle/`` and the bars in ``/job/input/bars.arrow``; calls the strategy; writes
its frame as an Arrow IPC stream in a :mod:`pitwall.frames` frame to the *original*
stdout. Before any strategy code is imported, fd 1 is moved to a private descriptor and
fd 1 becomes a copy of fd 2, so the strategy's ``print()`` goes to the log. On an
exception the traceback goes to stderr, an ERROR frame to the channel, and the exit code
is :data:`STRATEGY_FAILED`.

Determinism: before every call of the strategy, ``random`` and NumPy are seeded from
``spec.seed`` and the simulated clock (:mod:`pitwall.sandbox.clock`) is set to the frame's last
bar. A ``spec.json`` of kind ``"event"`` runs the lock-step loop
(:mod:`pitwall.sandbox.event_loop`), one of kind ``"prefixes"`` answers the worker's
prefix calls of the lookahead audit or of a stepped run (:mod:`pitwall.sandbox.prefixes`);
the runner itself never re-runs a strategy.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import IO

from pitwall.frames import FrameKind, encode_frame
from pitwall.sandbox.clock import SimulatedClock
from pitwall.sandbox.loader import call_strategy, last_ts, load_strategy, seed_everything

# The real monotonic clock (the simulated clock leaves it real; captured to be explicit).
_monotonic = time.monotonic

STRATEGY_FAILED = 3


def take_result_channel() -> IO[bytes]:
    """Move the result channel off fd 1; from now on fd 1 (``print``) writes to stderr."""
    sys.stdout.flush()
    channel_fd = os.dup(1)  # non-inheritable: a subprocess of the strategy cannot get it
    os.dup2(2, 1)
    return os.fdopen(channel_fd, "wb")


def run_job(job: Path) -> bytes:
    """Run the job's strategy on its bars: its output as an Arrow IPC stream."""
    import polars as pl

    spec = json.loads((job / "input" / "spec.json").read_text())
    bars = pl.read_ipc(job / "input" / "bars.arrow")
    seed, params = int(spec.get("seed", 0)), dict(spec.get("params") or {})
    clock = SimulatedClock()
    clock.set(last_ts(bars))
    clock.install()  # before the strategy module is imported: it sees the simulated clock
    seed_everything(seed)
    fn = load_strategy(job / "bundle", str(spec["entrypoint"]))
    return call_strategy(fn, bars, params, seed=seed, clock=clock)


# --- warm pool (issue 5): ``python -m pitwall.sandbox.runner --warm /job`` ---
WARM_FLAG = "--warm"
#: The line a warm runner writes on the channel once its imports are done.
READY_LINE = b"pitwall-warm-ready\n"
GO_LINE = b"go\n"
#: Asks a warm runner to say "ready" again: one restored from a checkpoint said it before
#: the checkpoint, so its answer proves the restored process is up and reading stdin.
PING_LINE = b"ping\n"
_PRELOAD = ("numpy", "polars", "pyarrow", "pitwall.strategy")


def preload() -> None:
    """Import what strategies use before a job exists (the warm pool's whole point)."""
    for name in _PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def wait_for_go(channel: IO[bytes]) -> bool:
    """Say "ready" on the channel, then block until the worker says "go" on stdin.

    The job's files are written into the (empty, read-only) mounts only after the
    sandbox started; they are read after "go". Each "ping" before it is answered with
    "ready" (a restored runner's handshake). EOF instead of "go": the pool is shutting
    down, exit quietly.
    """
    channel.write(READY_LINE)
    channel.flush()
    while (line := _read_line(0, 64)) == PING_LINE:
        channel.write(READY_LINE)
        channel.flush()
    return line == GO_LINE


def _read_line(fd: int, limit: int) -> bytes:
    """One line of ``fd``, byte by byte: nothing after it is consumed, since a live session
    (event mode, the prefix channel) reads its frames from the same fd right after "go"."""
    line = b""
    while len(line) < limit and not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            break
        line += byte
    return line
# --- end warm pool ---


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m pitwall.sandbox.runner JOB_DIR``; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    warm = bool(args) and args[0] == WARM_FLAG
    if warm:
        args = args[1:]
        preload()
    channel = take_result_channel()
    job = Path(args[0] if args else "/job")
    if warm and not wait_for_go(channel):
        return 0
    try:
        kind = json.loads((job / "input" / "spec.json").read_text()).get("kind")
        if warm and kind not in ("event", "prefixes"):
            os.close(0)  # a one-shot strategy gets no stdin, as in a cold run
        if kind == "event":
            from pitwall.sandbox.event_loop import serve  # lock-step event mode

            serve(job, channel)
            return 0
        if kind == "prefixes":  # audit re-runs or a stepped run (pitwall.prefix_wire)
            from pitwall.sandbox.prefixes import serve_prefixes

            serve_prefixes(job, channel)
            return 0
        payload = run_job(job)
    except BaseException as exc:  # a strategy may raise anything, even SystemExit
        traceback.print_exc()
        sys.stderr.flush()
        err = {"error": type(exc).__name__, "message": str(exc)[:2000]}
        channel.write(encode_frame(FrameKind.ERROR, json.dumps(err).encode()))
        channel.flush()
        return STRATEGY_FAILED
    channel.write(encode_frame(FrameKind.RESULT, payload))
    channel.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
