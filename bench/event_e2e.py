"""Event-driven jobs end to end, as a user runs them, against backtrader and backtesting.py.

One symbol x one year of generated minute bars (``generate_dataset``, seed 7), one
strategy written three ways: SMA(10/50) on the close, long ``--weight`` of equity while
the fast mean is above the slow one, flat otherwise; a market order on each change of
state, filled at the next bar's open. Contenders and the window each one's time covers:

* **Pitwall event job** (``run_embedded``, the path ``pitwall run --engine event`` takes
  without a server): submit -> terminal job view. Includes the job row and queue, the
  worker claiming it, the bundle and the bars read from the lake, the gVisor sandbox
  booting and importing the runner, the lock-step feed (the broker filling), metrics,
  manifest and report files, and the database writes. The same run's *steady-state*
  lock-step rate (READY to END, from the job's manifest) is printed beside it, with a
  breakdown of where the job's time went (timers wrapped around the attempt's steps).
* **Pitwall CLI** (``pitwall run --engine event``, a fresh process): the same, plus the
  CLI's interpreter start and imports, and printing the metrics.
* **backtrader**: (a) in process, from ``Cerebro()`` to ``run()`` returning, the bars
  already a pandas frame in memory; (b) a fresh ``python`` process: interpreter start,
  imports, reading the same bars from Parquet, the run, printing the result.
* **backtesting.py**: the same two windows (``Backtest(...)`` + ``run()``; a fresh process).

Every contender runs ``--repeat`` times, interleaved, after one warm-up round (the first
job of a process also builds the stack; reported apart); the median counts. Before any
ratio is printed, the fills are cross-checked: each engine's number of fills must equal
the number of state changes before the last bar computed here with NumPy, within a stated
tolerance (near-ties of the two means can flip on floating-point rounding, since each
engine sums its windows its own way: at most ``max(2, 0.2 %)`` fills).

    .venv/bin/python bench/event_e2e.py [--months 12] [--repeat 3] [--no-cli]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pitwall.bundle import build_bundle
from pitwall.models import BacktestSpec, EngineKind, JobView, Limits
from pitwall_executor.config import load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.datalake.planner import load_bars
from pitwall_executor.execution import attempt as attempt_mod
from pitwall_executor.execution import event as event_mod
from pitwall_executor.orchestration.embedded import run_embedded
from pitwall_executor.sandbox import oci
from pitwall_executor.sandbox.gvisor import GVisorBackend
from pitwall_executor.stack import Stack

SYMBOL = "AAPL"
FAST, SLOW = 10, 50
CAPITAL = 10_000.0  # small: an order never meets the job path's volume cap (checked)
MAX_PARTICIPATION = 0.1  # the job path's cap per bar (feeder.run_lockstep's default)

STRATEGY = '''
from collections import deque
import pitwall

class Sma(pitwall.Strategy):
    """SMA(fast/slow) crossover on one symbol, incremental sums, long or flat."""
    fast = {fast}
    slow = {slow}
    weight = {weight}
    lookback = 1

    def on_start(self, ctx):
        self.win = deque()
        self.sf = self.ss = 0.0
        self.long = False

    def on_bar(self, ctx):
        px = float(ctx.current("close")[0])
        w = self.win
        w.append(px)
        self.ss += px
        self.sf += px
        if len(w) > self.fast:
            self.sf -= w[-self.fast - 1]
        if len(w) > self.slow:
            self.ss -= w.popleft()
        elif len(w) < self.slow:
            return
        up = self.sf * self.slow > self.ss * self.fast
        if up != self.long:
            self.long = up
            ctx.order_target_percent(ctx.symbols[0], self.weight if up else 0.0)
'''

# The peers as a user's script: imports, read the bars, run, print the fills.
BACKTRADER = '''
import sys, warnings
import pandas as pd
import backtrader as bt

FAST, SLOW, WEIGHT, CAPITAL = {fast}, {slow}, {weight}, {capital}

class SmaState(bt.Strategy):
    def __init__(self):
        self.fast = bt.indicators.SMA(self.data.close, period=FAST)
        self.slow = bt.indicators.SMA(self.data.close, period=SLOW)
        self.long = False
        self.fills = 0

    def notify_order(self, order):
        if order.status == order.Completed:
            self.fills += 1

    def next(self):
        up = self.fast[0] > self.slow[0]
        if up != self.long:
            self.long = up
            self.order_target_percent(target=WEIGHT if up else 0.0)

def run(df):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.PandasData(dataname=df))
    cerebro.addstrategy(SmaState)
    cerebro.broker.setcash(CAPITAL)
    strat = cerebro.run()[0]
    return strat.fills, cerebro.broker.getvalue()

if __name__ == "__main__":
    warnings.simplefilter("ignore")
    df = pd.read_parquet(sys.argv[1]).set_index("ts")
    fills, value = run(df)
    print(fills, value)
'''

BACKTESTING = '''
import sys, warnings
import pandas as pd
from backtesting import Backtest, Strategy

FAST, SLOW, WEIGHT, CAPITAL = {fast}, {slow}, {weight}, {capital}

def sma(values, n):
    return pd.Series(values).rolling(n).mean()

class SmaState(Strategy):
    def init(self):
        self.f = self.I(sma, self.data.Close, FAST)
        self.s = self.I(sma, self.data.Close, SLOW)
        self.long = False
        self.placed = 0  # placed before the last bar: each fills at the next open

    def next(self):
        if len(self.data) < SLOW:
            return
        up = self.f[-1] > self.s[-1]
        if up != self.long:
            self.long = up
            if up:
                self.buy(size=WEIGHT)
            else:
                self.position.close()
            if len(self.data) < self.last:
                self.placed += 1

def run(df):
    bt = Backtest(df, SmaState, cash=CAPITAL, commission=0.0, finalize_trades=False)
    SmaState.last = len(df)
    stats = bt.run()
    return stats._strategy.placed, float(stats["Equity Final [$]"])

if __name__ == "__main__":
    warnings.simplefilter("ignore")
    df = pd.read_parquet(sys.argv[1]).set_index("ts").rename(columns=str.capitalize)
    fills, value = run(df[["Open", "High", "Low", "Close", "Volume"]])
    print(fills, value)
'''


class Steps:
    """Wall time of named steps of the job path, by wrapping them in this process."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}
        self.feed_seconds = 0.0
        self.feed_bars = 0
        self.lane = (0, 0)  # the last job's answers through the lane, of all answers

    def wrap(self, owner: Any, name: str, label: str) -> None:
        inner = getattr(owner, name, None)
        if inner is None:  # the job path changed: say so rather than time the wrong thing
            print(f"note: {owner.__name__}.{name} is gone; {label!r} not broken out")
            return
        steps = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                steps.current[label] = steps.current.get(label, 0.0) + time.perf_counter() - t0
        setattr(owner, name, timed)

    def wrap_feed(self) -> None:
        inner = event_mod.__dict__["run_lockstep"]  # the name the attempt calls
        steps = self

        def feed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            result, stats = inner(*args, **kwargs)
            wall = time.perf_counter() - t0
            steps.feed_seconds, steps.feed_bars = stats.seconds, stats.bars
            steps.lane = (stats.lane_answers, stats.round_trips + 1)  # + the END answer
            steps.current["feed: to READY (boot + imports if not restored)"] = wall - stats.seconds
            steps.current["feed: lock-step READY -> END"] = stats.seconds
            return result, stats
        setattr(event_mod, "run_lockstep", feed)  # noqa: B010 (not exported)

    @contextmanager
    def run(self) -> Iterator[dict[str, float]]:
        self.current = {}
        out: dict[str, float] = {}
        yield out
        out.update(self.current)


def install(steps: Steps) -> None:
    steps.wrap(attempt_mod.Attempt, "process", "attempt")
    steps.wrap(attempt_mod.Attempt, "before_start", "stage: bundle, bars from the lake, inputs")
    steps.wrap(GVisorBackend, "start", "sandbox: start (checkpoint restore, else launch)")
    steps.wrap_feed()
    steps.wrap(event_mod.EventAttempt, "execute", "execute")
    steps.wrap(event_mod.EventAttempt, "account", "account: metrics")
    steps.wrap(attempt_mod.Attempt, "report", "report: manifest, report files")


def reference_fills(close: np.ndarray) -> int:
    """State changes of fast>slow before the last bar (each one's order fills next bar)."""
    c = np.concatenate([[0.0], np.cumsum(close)])
    n = len(close)
    idx = np.arange(SLOW - 1, n)
    fast = (c[idx + 1] - c[idx + 1 - FAST]) / FAST
    slow = (c[idx + 1] - c[idx + 1 - SLOW]) / SLOW
    up = fast > slow
    prev = np.concatenate([[False], up[:-1]])
    changes = np.flatnonzero(up != prev) + SLOW - 1
    return int((changes < n - 1).sum())


def make_stack(root: Path, months: int) -> tuple[Stack, dt.date, dt.date]:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    start = dt.date(2024, 1, 2)
    end = dt.date(2024 + (months - 1) // 12, (months - 1) % 12 + 1, 28)
    generate_dataset(Catalog(root / "lake"), "sample", symbols=[SYMBOL],
                     start=dt.date(2024, 1, 1), end=end, seed=7)
    st = Stack.from_config(load_config(environ={}, data_dir=root, sandbox="gvisor"))
    return st, start, end


def pitwall_job(st: Stack, spec: BacktestSpec, bundle: bytes) -> tuple[float, JobView]:
    t0 = time.perf_counter()
    view = run_embedded(st, spec, bundle)
    seconds = time.perf_counter() - t0
    if view.status.value != "COMPLETED" or view.metrics is None:
        raise RuntimeError(f"the event job ended {view.status.value}: {view.reason}")
    return seconds, view


def cli_job(root: Path, strategy: Path, start: dt.date, end: dt.date) -> tuple[float, int]:
    cmd = [str(Path(sys.executable).parent / "pitwall"), "--data-dir", str(root), "run",
           str(strategy), "--engine", "event", "--symbols", SYMBOL, "--start", str(start),
           "--end", str(end), "--capital", str(CAPITAL), "--costs-preset", "frictionless",
           "--json"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITWALL_")}
    env["PITWALL_SANDBOX"] = "gvisor"
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"pitwall run failed ({res.returncode}): {res.stderr[-2000:]}")
    view = json.loads(res.stdout)
    return seconds, int(view["metrics"]["n_trades"])


def script_run(script: Path, data: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, str(script), str(data)], capture_output=True,
                         text=True, check=False)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{script.name} failed: {res.stderr[-2000:]}")
    return seconds, int(res.stdout.split()[0])


def load_module(path: Path, name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # backtrader looks its strategy's module up there
    spec.loader.exec_module(module)
    return module


def in_process(fn: Callable[[], tuple[int, float]]) -> tuple[float, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        fills, _ = fn()
        return time.perf_counter() - t0, fills


@dataclass
class Setup:
    """The stack, the job, and the peers' inputs: the same bars for everyone."""

    root: Path
    stack: Stack
    spec: BacktestSpec
    bundle: bytes
    strategy: Path
    bars: pl.DataFrame
    data: Path  # the bars as Parquet, for the fresh-process peers
    frame: Any  # the bars as pandas, for the in-process peers
    bt: Any
    btpy: Any
    expected: int


def prepare(root: Path, args: argparse.Namespace) -> Setup:
    fmt = {"fast": FAST, "slow": SLOW, "weight": args.weight, "capital": CAPITAL}
    st, start, end = make_stack(root / "data", args.months)
    strategy = root / "strategy.py"
    strategy.write_text(STRATEGY.format(**fmt))
    (root / "bt_script.py").write_text(BACKTRADER.format(**fmt))
    (root / "btpy_script.py").write_text(BACKTESTING.format(**fmt))
    # The very bars the job reads, for the peers (same lake, same slice).
    bars = load_bars(st.catalog, st.catalog.snapshot("sample"), [SYMBOL], start, end)
    naive = bars.with_columns(pl.col("ts").dt.replace_time_zone(None))
    data = root / "bars.parquet"
    naive.select("ts", "open", "high", "low", "close", "volume").write_parquet(data)
    frame = naive.to_pandas().set_index("ts")[["open", "high", "low", "close", "volume"]]
    # Partial fills would make the fill counts differ for a reason other than speed: no
    # order (equity at most doubled) may exceed the smallest bar's volume cap.
    closes, volumes = bars.get_column("close").to_numpy(), bars.get_column("volume").to_numpy()
    largest = args.weight * CAPITAL * 2 / float(closes.min())
    cap = MAX_PARTICIPATION * float(volumes.min())
    if largest >= cap:
        raise SystemExit(f"orders of up to {largest:.0f} shares would meet the volume cap "
                         f"({cap:.0f} shares): lower --weight")
    # No costs, lots or minimum: the peers have none (docs/engine-conventions.md §2.3).
    spec = BacktestSpec(dataset="sample", universe=[SYMBOL], start=start, end=end,
                        capital=CAPITAL, engine=EngineKind.EVENT, costs_preset="frictionless",
                        limits=Limits(timeout_s=3600, memory_mb=2048))
    bundle = build_bundle({"strategy.py": strategy.read_bytes()}, entrypoint="strategy.py",
                          kind="event")
    return Setup(root, st, spec, bundle, strategy, bars, data, frame,
                 load_module(root / "bt_script.py", "bt_script"),
                 load_module(root / "btpy_script.py", "btpy_script"),
                 reference_fills(bars.get_column("close").to_numpy()))


JOB = "pitwall job (run_embedded)"
CLI = "pitwall run --engine event (CLI)"


@dataclass
class Measured:
    times: dict[str, list[float]] = field(default_factory=dict)
    fills: dict[str, set[int]] = field(default_factory=dict)
    breakdowns: list[dict[str, float]] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    other_rates: list[float] = field(default_factory=list)
    first_job: float = 0.0
    first_parts: dict[str, float] = field(default_factory=dict)


def measure(s: Setup, steps: Steps, args: argparse.Namespace) -> Measured:
    m = Measured()

    def job() -> tuple[float, int]:
        with steps.run() as parts:
            seconds, view = pitwall_job(s.stack, s.spec, s.bundle)
        parts["total"] = seconds
        m.breakdowns.append(parts)
        m.rates.append(steps.feed_bars / steps.feed_seconds)
        assert view.metrics is not None
        return seconds, view.metrics.n_trades

    btpy_frame = s.frame.rename(columns=str.capitalize)
    runs: dict[str, Callable[[], tuple[float, int]]] = {
        JOB: job,
        "backtrader, in process": lambda: in_process(lambda: s.bt.run(s.frame)),
        "backtrader, fresh process": lambda: script_run(s.root / "bt_script.py", s.data),
        "backtesting.py, in process": lambda: in_process(lambda: s.btpy.run(btpy_frame)),
        "backtesting.py, fresh process": lambda: script_run(s.root / "btpy_script.py", s.data),
    }
    if not args.no_cli:
        runs[CLI] = lambda: cli_job(s.root / "data", s.strategy, s.spec.start, s.spec.end)
    if args.compare_shares is not None:  # diagnosis: the same job, another sandbox weight
        def other_weight() -> tuple[float, int]:
            shipped, oci.SANDBOX_CPU_SHARES = oci.SANDBOX_CPU_SHARES, args.compare_shares
            try:
                with steps.run():
                    seconds, view = pitwall_job(s.stack, s.spec, s.bundle)
                m.other_rates.append(steps.feed_bars / steps.feed_seconds)
            finally:
                oci.SANDBOX_CPU_SHARES = shipped
            assert view.metrics is not None
            return seconds, view.metrics.n_trades
        runs[f"{JOB}, cpu.shares {args.compare_shares}"] = other_weight
    m.first_job, n = job()  # warm-up: the stack's first job (backend, image check)
    m.fills[JOB] = {n}
    m.first_parts = m.breakdowns.pop()
    m.rates.pop()
    for key, fn in runs.items():
        if key != JOB:
            m.fills.setdefault(key, set()).add(fn()[1])
    m.other_rates.clear()  # warm-ups do not count
    for _ in range(args.repeat):  # interleaved: a burst of load hits every contender
        for key, fn in runs.items():
            seconds, n = fn()
            m.times.setdefault(key, []).append(seconds)
            m.fills.setdefault(key, set()).add(n)
    return m


def cross_check(s: Setup, m: Measured) -> None:
    """Before any ratio: every engine made the expected fills, within the tolerance."""
    tolerance = max(2, int(0.002 * s.expected))
    for key, seen in m.fills.items():
        for n in seen:
            if abs(n - s.expected) > tolerance:
                raise SystemExit(f"{key} made {n} fills, expected {s.expected} +- "
                                 f"{tolerance}: the engines do not trade alike")
    print(f"fills cross-checked (every run, warm-ups included): within +-{tolerance} of "
          f"{s.expected:,}: " + "; ".join(f"{k} {sorted(v)}" for k, v in m.fills.items()))


def report(s: Setup, m: Measured, args: argparse.Namespace, steps: Steps) -> None:
    med = {k: statistics.median(v) for k, v in m.times.items()}
    print(f"\nend to end, median of {args.repeat}:")
    for key, value in med.items():
        runs = ", ".join(f"{t:.2f}" for t in m.times[key])
        print(f"  {key:<36} {value:8.2f} s   (runs {runs})")
    print(f"  (the process's first job, excluded: {m.first_job:.2f} s)")
    rate = statistics.median(m.rates)
    print(f"steady-state lock-step rate (the same jobs, READY -> END): {rate:,.0f} bars/s "
          f"= {1e6 / rate:.0f} µs per bar")
    lane, answers = steps.lane
    print(f"  answers through the shared-memory lane (the last job): {lane:,} of {answers:,}"
          f"{'' if lane else ' (pipes only: no two CPUs were free)'}")
    if m.other_rates:
        other = statistics.median(m.other_rates)
        print(f"  with sandbox cpu.shares {args.compare_shares}: {other:,.0f} bars/s = "
              f"{1e6 / other:.0f} µs per bar ({other / rate:.2f}x)")
    print(f"backtrader in process: {s.bars.height / med['backtrader, in process']:,.0f} bars/s; "
          f"backtesting.py in process: "
          f"{s.bars.height / med['backtesting.py, in process']:,.0f} bars/s")
    job_s = med[JOB]
    for peer in ("backtrader, fresh process", "backtrader, in process",
                 "backtesting.py, fresh process", "backtesting.py, in process"):
        ratio = med[peer] / job_s
        target = ""
        if peer.startswith("backtrader"):
            target = f"  (target >= 2x: {'met' if ratio >= 2 else 'NOT met'})"
        print(f"pitwall job: {ratio:5.2f}x {peer}'s time{target}")
    if CLI in med:
        print(f"pitwall CLI: {med['backtrader, fresh process'] / med[CLI]:5.2f}x backtrader's "
              "fresh process time")
    breakdown(m, job_s)


def breakdown(m: Measured, job_s: float) -> None:
    print("\nwhere the job's time goes (median of the timed jobs; the first job apart):")
    keys = [k for k in m.breakdowns[0] if k not in ("total", "attempt", "execute")]

    def part(parts: dict[str, float], key: str) -> float:
        return parts.get(key, 0.0)

    def parts_of(prefixes: tuple[str, ...]) -> Callable[[dict[str, float]], float]:
        return lambda p: sum(part(p, k) for k in keys if k.startswith(prefixes))

    inside_execute, inside_attempt = parts_of(("feed", "sandbox")), parts_of(
        ("stage", "account", "report"))
    rows: list[tuple[str, Callable[[dict[str, float]], float]]] = [
        (k, lambda p, k=k: part(p, k)) for k in keys]  # type: ignore[misc]
    rows += [
        ("execute: rest (Market pivot, end of session, exit)",
         lambda p: part(p, "execute") - inside_execute(p)),
        ("attempt: rest (backend on the first job, work dir, log)",
         lambda p: part(p, "attempt") - part(p, "execute") - inside_attempt(p)),
        ("outside the attempt (submit, queue, claim, DB writes)",
         lambda p: part(p, "total") - part(p, "attempt")),
    ]
    for label, fn in rows:
        value = statistics.median(fn(p) for p in m.breakdowns)
        print(f"  {label:<58} {value * 1e3:9.1f} ms   (first job {fn(m.first_parts) * 1e3:9.1f})")
    print(f"  {'total':<58} {job_s * 1e3:9.1f} ms   (first job {m.first_job * 1e3:9.1f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--months", type=int, default=12, help="months of 1-symbol bars")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--weight", type=float, default=0.2, help="long position, of equity")
    parser.add_argument("--no-cli", action="store_true", help="skip the `pitwall run` rows")
    parser.add_argument("--compare-shares", type=int, default=None,
                        help="diagnosis only: also run the job with this sandbox cpu.shares, "
                             "interleaved with the others")
    parser.add_argument("--sandbox-cpu-shares", type=int, default=None,
                        help="diagnosis only: the sandbox cgroup's cpu.shares for the "
                             "in-process jobs (the product's is oci.SANDBOX_CPU_SHARES)")
    args = parser.parse_args()
    if args.sandbox_cpu_shares is not None:
        oci.SANDBOX_CPU_SHARES = args.sandbox_cpu_shares
    steps = Steps()
    install(steps)
    with tempfile.TemporaryDirectory(prefix="pitwall-event-e2e-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        t0 = time.perf_counter()
        s = prepare(root, args)
        print(f"1 symbol: {s.bars.height:,} minute bars, {s.spec.start}..{s.spec.end}; "
              f"SMA({FAST}/{SLOW}), long {args.weight:g} of equity or flat; {s.expected:,} "
              f"fills expected (NumPy); setup {time.perf_counter() - t0:.1f} s; sandbox "
              f"cpu.shares {oci.SANDBOX_CPU_SHARES}; load {_loadavg()}")
        m = measure(s, steps, args)
        cross_check(s, m)
        report(s, m, args, steps)
        print(f"load after: {_loadavg()}")
    return 0


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    sys.exit(main())
