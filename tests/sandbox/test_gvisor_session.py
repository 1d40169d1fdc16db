"""Interactive gVisor sessions (``GVisorBackend.start``): live pipes, limits from outside."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pitwall.models import Limits
from pitwall_executor.sandbox.base import PYTHON, Mount, SandboxRequest
from pitwall_executor.sandbox.gvisor import GVisorBackend, GVisorSession

pytestmark = pytest.mark.sandbox

FAST = Limits(timeout_s=20, memory_mb=256, pids=64, scratch_mb=8, output_mb=4, log_kb=4)

ECHO = """
import sys
sys.stderr.write("ready\\n"); sys.stderr.flush()
for line in sys.stdin.buffer:
    sys.stdout.buffer.write(line.upper()); sys.stdout.buffer.flush()
sys.stderr.write("x" * 100000)
"""


def request(code: str, limits: Limits = FAST, job_id: str = "s",
            mounts: tuple[Mount, ...] = ()) -> SandboxRequest:
    return SandboxRequest(job_id, (PYTHON, "-S", "-c", code), mounts, {}, limits)


def test_lock_step_round_trip_then_outcome(backend: GVisorBackend) -> None:
    with backend.start(request(ECHO)) as session:
        for word in (b"bar 1\n", b"bar 2\n"):
            session.stdin.write(word)
            session.stdin.flush()
            assert session.stdout.readline() == word.upper()
        session.stdin.close()
        assert session.stdout.read() == b""
        out = session.wait()
    assert out.ok and out.exit_code == 0 and out.stdout == b""
    assert out.stderr.startswith(b"ready") and out.stderr_truncated
    assert len(out.stderr) < 4 * 1024 + 100  # capped at log_kb


def test_wall_clock_kills_while_the_caller_blocks_on_stdout(backend: GVisorBackend) -> None:
    session = backend.start(request("import time; time.sleep(60)",
                                    FAST.model_copy(update={"timeout_s": 1.5})))
    t0 = time.monotonic()
    assert session.stdout.read() == b""  # blocks until the watchdog kills the sandbox
    assert time.monotonic() - t0 < 1.5 + 2.0
    out = session.wait()
    session.stdout.close()
    assert out.timed_out and not out.cancelled and not out.ok


def test_kill_from_another_thread_and_by_job_id(backend: GVisorBackend) -> None:
    for how in ("session", "backend"):
        session = backend.start(request("import time; time.sleep(60)", job_id=f"k-{how}"))
        killed_at: list[float] = []

        def kill(how: str = how, session: GVisorSession = session,
                 killed_at: list[float] = killed_at) -> None:
            killed_at.append(time.monotonic())
            session.kill() if how == "session" else backend.kill(f"k-{how}")

        timer = threading.Timer(0.5, kill)
        timer.start()
        out = session.wait(timeout=15)
        ended = time.monotonic()
        session.stdout.close()
        assert out.cancelled and not out.timed_out
        assert ended - killed_at[0] < 1.5  # "cancel kills it within a second", plus cleanup


def test_files_written_into_an_empty_mount_after_start_are_seen(
    backend: GVisorBackend, tmp_path: Path
) -> None:
    # What the warm pool relies on: the job's files arrive after the sandbox started.
    box = tmp_path / "box"
    box.mkdir()
    box.chmod(0o755)
    code = ("import sys; sys.stdin.readline(); "
            "print(open('/job/input/f').read(), flush=True)")
    with backend.start(request(code, mounts=(Mount(box, "/job/input"),))) as session:
        time.sleep(0.3)
        (box / "f").write_text("late file")
        (box / "f").chmod(0o444)
        session.stdin.write(b"go\n")
        session.stdin.flush()
        assert session.stdout.readline() == b"late file\n"
        assert session.wait().ok
