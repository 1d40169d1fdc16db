"""Lock-step event mode over a REAL gVisor session: point-in-time and trusted PnL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.execution.conftest import make_job, minute_bars

from pitwall.errors import StrategyOutputError
from pitwall.events import BrokerCosts, Market, run_local
from pitwall.models import Limits
from pitwall_executor.execution.feeder import run_lockstep
from pitwall_executor.sandbox import runner_request
from pitwall_executor.sandbox.gvisor import GVisorBackend

pytestmark = pytest.mark.sandbox
LIMITS = Limits(timeout_s=60, memory_mb=512, pids=64, scratch_mb=8, output_mb=4, log_kb=64)

# Every wake-up, try every way to see a bar after ctx.now: bytes already waiting on the
# channel (non-blocking read of fd 0 after a pause), rows of the buffer past the current
# one, files of bars anywhere under /job. Orders still flow (SMA crossover) so fills and
# the broker's accounting are exercised. Any breach raises: the run then fails.
PEEKER = r'''
import fcntl, os, sys, time
import numpy as np
import pitwall

class Peeker(pitwall.Strategy):
    lookback = 1000
    in_sandbox = True  # False for the in-process replay, which has no /job and no channel
    def on_start(self, ctx):
        self.checks = 0
        if self.in_sandbox:
            files = sorted(os.path.join(d, f) for d, _, fs in os.walk("/job") for f in fs)
            if files != ["/job/bundle/strategy.py", "/job/input/spec.json"]:
                raise RuntimeError(f"unexpected files under /job: {files}")
    def on_bar(self, ctx):
        if self.in_sandbox:
            self.peek(ctx)
        self.checks += 1
        if ctx.available >= 30:
            c = ctx.history("close", 30, "AAPL")
            fast, slow = c[-5:].mean(), c.mean()
            held = ctx.portfolio.position("AAPL")
            if fast > slow and held <= 0 and not ctx.open_orders:
                ctx.order_target_percent("AAPL", 0.9)
            elif fast < slow and held > 0 and not ctx.open_orders:
                ctx.order("AAPL", -held, limit=round(ctx.price("AAPL") * 1.0005, 2))
    def peek(self, ctx):
        if self.checks % 50 == 0:
            time.sleep(0.02)  # give a feeder that ran ahead time to write the next bar
        flags = fcntl.fcntl(0, fcntl.F_GETFL)
        fcntl.fcntl(0, fcntl.F_SETFL, flags | os.O_NONBLOCK)
        try:
            ahead = os.read(0, 1 << 16)
        except BlockingIOError:
            ahead = b""
        finally:
            fcntl.fcntl(0, fcntl.F_SETFL, flags)
        if ahead:
            raise RuntimeError(f"read {len(ahead)} bytes ahead of {ctx.now}")
        if not np.isnan(ctx._data[ctx._row + 1:]).all():
            raise RuntimeError("the buffer holds a bar after now")
    def on_end(self, ctx):
        print(f"peeker: {self.checks} checks, now={ctx.now:%Y-%m-%d %H:%M}", file=sys.stderr)
'''


def _load(source: str) -> type:
    namespace: dict[str, object] = {}
    exec(compile(source, "strategy.py", "exec"), namespace)  # the same class, in-process
    cls = namespace["Peeker"]
    assert isinstance(cls, type)
    return cls


def test_point_in_time_and_the_same_books_as_a_local_run(gvisor: GVisorBackend,
                                                         tmp_path: Path) -> None:
    bars = minute_bars(["AAPL"], days=2)
    market = Market.from_bars(bars)
    job = make_job(tmp_path, PEEKER, ["AAPL"])
    costs = BrokerCosts(commission_bps=1, slippage_bps=2)
    with gvisor.start(runner_request("peek", job, LIMITS)) as session:
        result, stats = run_lockstep(session.stdin, session.stdout, market, capital=1e6,
                                     costs=costs)
        outcome = session.wait()
    log = outcome.stderr.decode()
    assert outcome.ok, log
    assert stats.round_trips == len(market) == 780
    m = re.search(r"peeker: (\d+) checks, now=(\S+ \S+)", log)
    assert m is not None and int(m.group(1)) == 780, log
    local = run_local(_load(PEEKER), market, {"in_sandbox": False}, capital=1e6,
                      costs=costs)
    assert result.n_trades > 10
    assert result.equity.equals(local.equity)  # same broker, same decisions, same books
    assert result.trades().equals(local.trades())


FORGER = r'''
import os, struct
import pitwall

class Forger(pitwall.Strategy):
    every = "30min"
    def on_bar(self, ctx):
        ctx.portfolio.cash = 1e12          # its own view only
        if not ctx.open_orders and not ctx.portfolio.positions.any():
            ctx.order("AAPL", 100)
        if ctx.now.hour == 20:             # late in the day: an order the SDK would refuse
            ctx._pending.append((10**9, 7, 0, 5.0, float("nan"), float("nan")))
'''


def test_a_strategy_cannot_forge_its_books_and_bad_orders_fail(gvisor: GVisorBackend,
                                                               tmp_path: Path) -> None:
    bars = minute_bars(["AAPL"], days=1)
    market = Market.from_bars(bars)
    job = make_job(tmp_path, FORGER, ["AAPL"])
    with gvisor.start(runner_request("forge", job, LIMITS)) as session:
        with pytest.raises(StrategyOutputError, match="outside the universe"):
            run_lockstep(session.stdin, session.stdout, market, capital=1e6,
                         costs=BrokerCosts())
        session.kill()
        session.wait()
