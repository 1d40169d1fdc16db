"""Interactive sessions (``backend.start``, event mode) on both backends: live pipes,
lock-step round trips, the wall clock and cancel enforced from outside."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sandbox_helpers import Backend

from pitwall.models import Limits
from pitwall_executor.sandbox.base import PYTHON, Mount, SandboxRequest

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


def test_lock_step_round_trip_then_outcome(sandbox: Backend) -> None:
    with sandbox.start(request(ECHO)) as session:
        for i in range(20):  # strictly alternating: one line out, one line back
            word = f"bar {i}\n".encode()
            session.stdin.write(word)
            session.stdin.flush()
            assert session.stdout.readline() == word.upper()
        session.stdin.close()  # EOF ends the strategy's loop
        assert session.stdout.read() == b""
        out = session.wait()
    assert out.ok and out.exit_code == 0 and out.stdout == b""
    assert out.stderr.startswith(b"ready") and out.stderr_truncated
    assert len(out.stderr) < 4 * 1024 + 100  # capped at log_kb


def test_wall_clock_kills_while_the_caller_blocks_on_stdout(sandbox: Backend) -> None:
    session = sandbox.start(request("import time; time.sleep(60)",
                                    FAST.model_copy(update={"timeout_s": 1.5})))
    t0 = time.monotonic()
    assert session.stdout.read() == b""  # blocks until the watchdog kills the sandbox
    assert time.monotonic() - t0 < 1.5 + 2.0
    out = session.wait()
    session.stdout.close()
    assert out.timed_out and not out.cancelled and not out.ok


@pytest.mark.parametrize("how", ["session", "backend"])
def test_kill_from_another_thread_and_by_job_id(sandbox: Backend, how: str) -> None:
    session = sandbox.start(request("import time; time.sleep(60)", job_id=f"k-{how}"))
    killed_at: list[float] = []

    def kill() -> None:
        killed_at.append(time.monotonic())
        session.kill() if how == "session" else sandbox.kill(f"k-{how}")

    timer = threading.Timer(0.5, kill)
    timer.start()
    out = session.wait(timeout=15)
    ended = time.monotonic()
    session.stdout.close()
    assert out.cancelled and not out.timed_out
    assert ended - killed_at[0] < 1.5  # "cancel kills it within a second", plus cleanup


def test_files_written_into_an_empty_mount_after_start_are_seen(
    sandbox: Backend, tmp_path: Path
) -> None:
    # What the warm pool relies on: the job's files arrive after the sandbox started.
    box = tmp_path / "box"
    box.mkdir()
    box.chmod(0o755)
    code = ("import sys; sys.stdin.readline(); "
            "print(open('/job/input/f').read(), flush=True)")
    with sandbox.start(request(code, mounts=(Mount(box, "/job/input"),))) as session:
        time.sleep(0.3)
        (box / "f").write_text("late file")
        (box / "f").chmod(0o444)
        session.stdin.write(b"go\n")
        session.stdin.flush()
        assert session.stdout.readline() == b"late file\n"
        assert session.wait().ok


EVENT_STRATEGY = r'''
import pitwall

class Cross(pitwall.Strategy):
    def on_bar(self, ctx):
        if ctx.available >= 20:
            c = ctx.history("close", 20, "AAA")
            held = ctx.portfolio.position("AAA")
            if c[-5:].mean() > c.mean() and held <= 0 and not ctx.open_orders:
                ctx.order_target_percent("AAA", 0.5)
            elif c[-5:].mean() < c.mean() and held > 0 and not ctx.open_orders:
                ctx.order("AAA", -held)
'''


def test_an_event_mode_job_runs_lock_step(sandbox: Backend, tmp_path: Path) -> None:
    """The real event-mode runner fed bar by bar by the trusted feeder, on each backend:
    one round trip per bar, and the books of an in-process run of the same strategy."""
    import datetime as dt
    import json

    import polars as pl

    from pitwall.events import BrokerCosts, Market, run_local
    from pitwall_executor.datalake.generate import generate_bars
    from pitwall_executor.execution.feeder import run_lockstep
    from pitwall_executor.sandbox.base import runner_request

    day = dt.date(2024, 1, 2)
    bars = pl.concat(list(generate_bars(["AAA"], day, day + dt.timedelta(days=3), seed=5)))
    first = bars.get_column("ts").dt.date().min()
    market = Market.from_bars(bars.filter(pl.col("ts").dt.date() == first))
    job = tmp_path / "job"
    for d in ("bundle", "input"):
        (job / d).mkdir(parents=True)
    (job / "bundle" / "strategy.py").write_text(EVENT_STRATEGY)
    (job / "input" / "spec.json").write_text(json.dumps(
        {"kind": "event", "entrypoint": "strategy.py", "params": {}, "seed": 0,
         "symbols": ["AAA"], "capital": 1e6}))
    for p in (job, job / "bundle", job / "input"):
        p.chmod(0o755)
    limits = FAST.model_copy(update={"timeout_s": 120, "memory_mb": 512, "log_kb": 64})
    with sandbox.start(runner_request("event", job, limits)) as session:
        result, stats = run_lockstep(session.stdin, session.stdout, market, capital=1e6,
                                     costs=BrokerCosts())
        outcome = session.wait()
    assert outcome.ok, outcome.stderr.decode()[-2000:]
    assert stats.round_trips == len(market) > 300
    namespace: dict[str, object] = {}
    exec(compile(EVENT_STRATEGY, "strategy.py", "exec"), namespace)
    local = run_local(namespace["Cross"], market, {}, capital=1e6, costs=BrokerCosts())
    assert result.n_trades > 2
    assert result.equity.equals(local.equity)
