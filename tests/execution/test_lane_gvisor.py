"""The shared-memory lane (pitwall.lane) over a REAL gVisor session: the same books as the
pipes, every answer through the lane, nothing after ``now`` ever in it, and a strategy
that scribbles on it or cuts it short stops its own job with a clear error, never the
worker."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
from tests.execution.conftest import make_job, minute_bars

from pitwall import lane
from pitwall.engine.event_result import EventResult
from pitwall.errors import StrategyOutputError
from pitwall.events import BrokerCosts, Market
from pitwall.models import Limits
from pitwall_executor.execution.feeder import FeedStats, StrategyStopped, run_lockstep
from pitwall_executor.sandbox import runner_request
from pitwall_executor.sandbox.gvisor import GVisorBackend

pytestmark = pytest.mark.sandbox
LIMITS = Limits(timeout_s=60, memory_mb=512, pids=64, scratch_mb=8, output_mb=4, log_kb=64)

# Every wake-up, watch the lane's STEP region for a while (and sleep now and then, so a
# feeder that ran ahead would be caught): its bar time must stay ctx.now's. The lane dir
# must refuse a new file. Orders flow (an SMA crossover) so fills are exercised.
WATCHER = r'''
import mmap, os, struct, sys, time
import pitwall

STEP_AT, HEAD = 4096, 13

class Watcher(pitwall.Strategy):
    lookback = 60
    def on_start(self, ctx):
        self.checks = 0
        try:
            open("/job/channel/extra", "wb").write(b"x")
        except OSError:
            pass
        else:
            raise RuntimeError("the strategy could add a file to the lane dir")
        f = open("/job/channel/lane", "r+b")
        self.lane = mmap.mmap(f.fileno(), 0)
        self.on = struct.unpack_from("<q", self.lane, 256)[0] > 0  # else: pipes only
    def on_bar(self, ctx):
        now = ctx.ts
        for i in range(300 if self.on else 0):
            if struct.unpack_from("<q", self.lane, STEP_AT + HEAD)[0] != now:
                raise RuntimeError(f"the lane showed another bar than {now} in on_bar")
        self.checks += 1
        if self.checks % 100 == 0 and self.on:
            time.sleep(0.01)
            if struct.unpack_from("<q", self.lane, STEP_AT + HEAD)[0] != now:
                raise RuntimeError(f"the lane moved past {now} while on_bar ran")
        if ctx.available >= 30:
            c = ctx.history("close", 30, "AAPL")
            held = ctx.portfolio.position("AAPL")
            if c[-5:].mean() > c.mean() and held <= 0 and not ctx.open_orders:
                ctx.order_target_percent("AAPL", 0.9)
            elif c[-5:].mean() < c.mean() and held > 0 and not ctx.open_orders:
                ctx.order("AAPL", -held)
    def on_end(self, ctx):
        print(f"watcher: {self.checks} checks", file=sys.stderr)
'''


def _run(gvisor: GVisorBackend, job: Path, market: Market, *,
         spins: int) -> tuple[EventResult, FeedStats, str]:
    channel = job / "channel"
    channel.mkdir(exist_ok=True)
    channel.chmod(0o755)
    path = lane.create(channel, spins=spins)
    request = runner_request(f"lane-{spins}", job, LIMITS, channel=channel)
    with gvisor.start(request) as session:
        result, stats = run_lockstep(session.stdin, session.stdout, market, capital=1e6,
                                     costs=BrokerCosts(commission_bps=1),
                                     lane=path if spins else None)
        outcome = session.wait()
    assert outcome.ok, outcome.stderr.decode()
    return result, stats, outcome.stderr.decode()


def test_the_lane_carries_every_answer_and_keeps_the_books_of_the_pipes(
        gvisor: GVisorBackend, tmp_path: Path) -> None:
    market = Market.from_bars(minute_bars(["AAPL"], days=2))
    job = make_job(tmp_path, WATCHER, ["AAPL"])
    fast, stats, log = _run(gvisor, job, market, spins=lane.STRATEGY_SPINS_DEFAULT)
    assert stats.round_trips == len(market) == 780
    assert stats.lane_answers == stats.round_trips + 1  # and the END answer
    m = re.search(r"watcher: (\d+) checks", log)
    assert m is not None and int(m.group(1)) == 780, log
    assert not (job / "channel" / "extra").exists()
    slow, piped, _ = _run(gvisor, job, market, spins=0)  # the lane off: pipes only
    assert piped.lane_answers == 0
    assert fast.n_trades > 10
    assert fast.equity.equals(slow.equity)
    assert fast.trades().equals(slow.trades())


# At the 20th bar: publish a forged answer in the lane (garbage, or a header claiming
# more than the region holds), or cut the lane's file to nothing.
HOSTILE = r'''
import mmap, os, struct, time
import pitwall

class Hostile(pitwall.Strategy):
    lookback = 5
    mode = "garbage"
    def on_start(self, ctx):
        self.n = 0
    def on_bar(self, ctx):
        self.n += 1
        if self.n < 20:
            return
        if self.mode == "truncate":
            os.truncate("/job/channel/lane", 0)
            return
        f = open("/job/channel/lane", "r+b")
        m = mmap.mmap(f.fileno(), 0)
        answer_at = 4096 + (1 << 20) + 4096
        if self.mode == "garbage":
            m[answer_at:answer_at + 21] = b"\xff" * 21
        else:
            m[answer_at:answer_at + 13] = struct.pack(">4sBQ", b"PWL1", 18, 1 << 40)
        seq = struct.unpack_from("<q", m, 64)[0]
        struct.pack_into("<q", m, 64, seq + 1)
        time.sleep(1)  # the worker reads the forgery before the runner's answer replaces it
'''


@pytest.mark.parametrize(("mode", "error"), [
    ("garbage", "not a Pitwall frame"),
    ("oversize", "not a Pitwall frame"),
    ("truncate", None),
])
def test_a_strategy_that_forges_or_cuts_the_lane_stops_its_own_job(
        gvisor: GVisorBackend, tmp_path: Path, mode: str, error: str | None) -> None:
    market = Market.from_bars(minute_bars(["AAPL"], days=1))
    job = make_job(tmp_path, HOSTILE, ["AAPL"], params={"mode": mode})
    channel = job / "channel"
    channel.mkdir()
    channel.chmod(0o755)
    path = lane.create(channel, spins=lane.STRATEGY_SPINS_DEFAULT)
    before = threading.active_count()
    with gvisor.start(runner_request(f"hostile-{mode}", job, LIMITS,
                                     channel=channel)) as session:
        expected = StrategyOutputError if error else StrategyStopped
        with pytest.raises(expected, match=error):
            run_lockstep(session.stdin, session.stdout, market, capital=1e6,
                         costs=BrokerCosts(), lane=path)
        session.kill()
        session.wait()
    assert threading.active_count() <= before + 1  # the worker's process goes on


# Claims to sleep on every bar while it watches the lane (its own side made to watch for
# ever): the worker writes a wake-up to its pipe each step, which it never reads; 8,000
# steps of 13 bytes overfill a 64 KiB pipe.
SLEEPER = r'''
import mmap, struct
import pitwall

class Sleeper(pitwall.Strategy):
    lookback = 1
    def on_start(self, ctx):
        f = open("/job/channel/lane", "r+b")
        self.lane = mmap.mmap(f.fileno(), 0)
        self.n = 0
    def on_bar(self, ctx):
        if self.n == 0:  # its own side of the lane never sleeps, so never reads its pipe
            import gc
            side = next(o for o in gc.get_objects() if type(o).__name__ == "StrategyLane")
            side.spins = 10**12
        struct.pack_into("<q", self.lane, 192, 1)  # "I am asleep on my pipe"
        self.n += 1
        if self.n == 100:
            ctx.order("AAPL", 1)
'''


def test_a_strategy_that_claims_to_sleep_cannot_block_the_worker_on_a_full_pipe(
        gvisor: GVisorBackend, tmp_path: Path) -> None:
    market = Market.from_bars(minute_bars(["AAPL"], days=30))
    assert len(market) > 8000
    job = make_job(tmp_path, SLEEPER, ["AAPL"])
    _, stats, _ = _run(gvisor, job, market, spins=lane.STRATEGY_SPINS_DEFAULT)
    assert stats.round_trips == len(market)
    assert stats.lane_answers == stats.round_trips + 1
