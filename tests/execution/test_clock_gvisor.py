"""Event mode over a REAL gVisor session: inside the strategy process, ``time.time()``,
``datetime.now()`` and friends read the simulated clock, i.e. the current bar's ts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.execution.conftest import make_job, minute_bars

from pitwall.events import BrokerCosts, Market
from pitwall.models import Limits
from pitwall_executor.execution.feeder import run_lockstep
from pitwall_executor.sandbox import runner_request
from pitwall_executor.sandbox.gvisor import GVisorBackend

pytestmark = pytest.mark.sandbox
LIMITS = Limits(timeout_s=60, memory_mb=512, pids=64, scratch_mb=8, output_mb=4, log_kb=64)

# Every callback compares every wall-clock reading with ctx.now and raises on a mismatch;
# on_end prints what it saw so the test can check the values, not just the absence of errors.
CLOCKED = r'''
import datetime, sys, time
import pitwall

class Clocked(pitwall.Strategy):
    every = "15min"
    def on_start(self, ctx):
        self.checks = 0
        self.seen = []
    def check(self, ctx, where):
        now = ctx.now
        want = now.timestamp()
        got = {
            "time.time": time.time(), "time_ns": time.time_ns() / 1e9,
            "clock_gettime": time.clock_gettime(time.CLOCK_REALTIME),
            "datetime.now(UTC)": datetime.datetime.now(datetime.timezone.utc).timestamp(),
            "datetime.utcnow": datetime.datetime.utcnow().replace(
                tzinfo=datetime.timezone.utc).timestamp(),
            "datetime.now()": datetime.datetime.now().replace(
                tzinfo=datetime.timezone.utc).timestamp(),
        }
        bad = {k: v for k, v in got.items() if abs(v - want) > 1e-6}
        if bad or datetime.date.today() != now.date() or time.gmtime().tm_min != now.minute:
            raise RuntimeError(f"{where} at {now}: the clock says {bad or 'another day'}")
        self.checks += 1
        self.seen.append(int(want))
    def on_bar(self, ctx):
        self.check(ctx, "on_bar")
        if not ctx.open_orders and ctx.now.minute == 0:
            ctx.order(ctx.symbols[0], 1 if not ctx.portfolio.positions[0] else -1)
    def on_fill(self, ctx, fill):
        self.check(ctx, "on_fill")
        if fill.ts != ctx.now:
            raise RuntimeError("a fill stamped with another time than the bar's")
    def on_end(self, ctx):
        self.check(ctx, "on_end")
        print(f"clocked: {self.checks} checks, first={self.seen[0]} last={self.seen[-1]}",
              file=sys.stderr)
'''


def test_the_strategy_clock_is_the_bar_clock(gvisor: GVisorBackend, tmp_path: Path) -> None:
    market = Market.from_bars(minute_bars(["AAPL"], days=2))
    job = make_job(tmp_path, CLOCKED, ["AAPL"])
    with gvisor.start(runner_request("clock", job, LIMITS)) as session:
        result, stats = run_lockstep(session.stdin, session.stdout, market, capital=1e6,
                                     costs=BrokerCosts())
        outcome = session.wait()
    log = outcome.stderr.decode()
    assert outcome.ok, log
    m = re.search(r"clocked: (\d+) checks, first=(\d+) last=(\d+)", log)
    assert m is not None, log
    checks, first, last = (int(g) for g in m.groups())
    due = int((market.ts // 60_000_000 % 15 == 0).sum())  # every 15 min (New York = UTC+n h)
    fills = len(result.trades())
    assert fills > 5 and stats.round_trips >= due
    assert checks == due + fills + 1  # every on_bar, every on_fill, on_end
    assert first == market.ts[market.ts // 60_000_000 % 15 == 0][0] // 1_000_000
    assert last == market.ts[-1] // 1_000_000  # on_end: the last bar's time, not today
