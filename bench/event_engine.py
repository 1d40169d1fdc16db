"""Event-driven engine speed: peers, the local quick run, and lock-step through gVisor.

Same generated minute bars (``generate_bars``) for every contender, same SMA(10/50)
crossover logic (incremental sums; backtesting.py precomputes its SMAs with ``self.I``).
Bars/s counts (timestamp, symbol) bars. Printed ratios are the issue's targets:

* local quick run ≥ 2x backtesting.py (one symbol);
* lock-step (trivial strategy) within 1.3x of the channel's own limit (empty strategy,
  same run) and ≥ 1.5x backtrader (not installed here: its ~7.8k bars/s is the issue's
  figure measured on this machine, printed as a reference, not re-measured);
* 100 symbols in lock-step (one frame per timestamp) ≥ 5x backtesting.py.

    .venv/bin/python bench/event_engine.py [--days 20] [--days-100 5]

What bounds lock-step speed: one round trip per due timestamp; inside gVisor (ptrace
platform) each of the strategy's two syscalls per step (one read, one write) is trapped
and served by the Sentry, ~70 µs per round trip against ~11 µs for a plain pipe.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import tempfile
import time
import warnings
from pathlib import Path

import polars as pl

from pitwall.events import BrokerCosts, Market, run_local
from pitwall.models import Limits
from pitwall_executor.datalake.generate import generate_bars, sample_symbols
from pitwall_executor.feeder import run_lockstep
from pitwall_executor.sandbox import runner_request
from pitwall_executor.sandbox.gvisor import GVisorBackend

BACKTRADER_REFERENCE = 7_800  # bars/s, issue 4 (backtrader is not installed here)

STRATEGIES = '''
from collections import deque
import pitwall

class Empty(pitwall.Strategy):
    pass

class Sma(pitwall.Strategy):
    """SMA(fast/slow) crossover per symbol, incremental sums, long or flat."""
    fast = 10
    slow = 50
    lookback = 1
    def on_start(self, ctx):
        n = len(ctx.symbols)
        self.win = [deque() for _ in range(n)]
        self.sf, self.ss, self.long = [0.0] * n, [0.0] * n, [False] * n
    def on_bar(self, ctx):
        row = ctx.current("close").tolist()
        for j, px in enumerate(row):
            w = self.win[j]
            w.append(px)
            self.ss[j] += px
            self.sf[j] += px
            if len(w) > self.fast:
                self.sf[j] -= w[-self.fast - 1]
            if len(w) > self.slow:
                self.ss[j] -= w.popleft()
            elif len(w) < self.slow:
                continue
            up = self.sf[j] * self.slow > self.ss[j] * self.fast
            if up != self.long[j]:
                self.long[j] = up
                sym = ctx.symbols[j]
                ctx.order_target_percent(sym, (1.0 / len(row)) if up else 0.0)
'''


def bars_for(n_symbols: int, days: int) -> pl.DataFrame:
    start = dt.date(2024, 1, 2)
    frames = generate_bars(sample_symbols(n_symbols), start, start + dt.timedelta(days=days * 2),
                           seed=7)
    bars = pl.concat(list(frames))
    keep = sorted(bars.get_column("ts").dt.date().unique().to_list())[:days]
    return bars.filter(pl.col("ts").dt.date().is_in(keep))


def load_strategies(path: Path) -> dict[str, type]:
    spec = importlib.util.spec_from_file_location("bench_strategies", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {"Empty": module.Empty, "Sma": module.Sma}


def backtesting_py(bars: pl.DataFrame) -> float:
    """backtesting.py bars/s on one symbol (SMA 10/50 cross, long only)."""
    import pandas as pd
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    def sma(values: object, n: int) -> object:
        return pd.Series(values).rolling(n).mean()

    class SmaCross(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            self.f = self.I(sma, self.data.Close, 10)
            self.s = self.I(sma, self.data.Close, 50)

        def next(self) -> None:
            if crossover(self.f, self.s):
                self.buy()
            elif crossover(self.s, self.f):
                self.position.close()

    df = bars.to_pandas().set_index("ts").rename(columns=str.capitalize)[
        ["Open", "High", "Low", "Close", "Volume"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bt = Backtest(df, SmaCross, cash=1e9, commission=0.0, finalize_trades=True)
        t0 = time.perf_counter()
        bt.run()
        return len(df) / (time.perf_counter() - t0)


def lockstep(backend: GVisorBackend, root: Path, market: Market, name: str) -> tuple[float, int]:
    """Bars/s of one lock-step run through a fresh gVisor session (start-up excluded)."""
    import json
    import shutil

    job = root / f"job-{name}-{len(market.symbols)}"
    (job / "bundle").mkdir(parents=True)
    (job / "input").mkdir()
    (job / "bundle" / "strategy.py").write_text(STRATEGIES)
    (job / "input" / "spec.json").write_text(json.dumps({
        "kind": "event", "entrypoint": f"strategy.py:{name}", "params": {}, "seed": 0,
        "symbols": list(market.symbols), "capital": 1e9}))
    limits = Limits(timeout_s=900, memory_mb=1024)
    with backend.start(runner_request(f"bench-{name}", job, limits)) as session:
        _, stats = run_lockstep(session.stdin, session.stdout, market, capital=1e9,
                                costs=BrokerCosts(), max_participation=None)
        outcome = session.wait()
    shutil.rmtree(job)
    if not outcome.ok:
        raise RuntimeError(outcome.stderr.decode()[-2000:])
    return stats.bars * len(market.symbols) / stats.seconds, stats.round_trips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=20, help="days of 1-symbol bars")
    parser.add_argument("--days-100", type=int, default=5, help="days of 100-symbol bars")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pitwall-bench-") as tmp:
        root = Path(tmp)
        (root / "strategies.py").write_text(STRATEGIES)
        strategies = load_strategies(root / "strategies.py")
        one, hundred = bars_for(1, args.days), bars_for(100, args.days_100)
        m1, m100 = Market.from_bars(one), Market.from_bars(hundred)
        print(f"1 symbol: {len(m1):,} bars; 100 symbols: {len(m100):,} timestamps × 100")
        print(f"backtrader: not installed (issue's figure on this machine "
              f"~{BACKTRADER_REFERENCE:,} bars/s, not re-measured)")
        btpy = backtesting_py(one)
        print(f"backtesting.py (1 symbol): {btpy:,.0f} bars/s")
        t0 = time.perf_counter()
        run_local(strategies["Sma"], m1, capital=1e9, max_participation=None)
        local = len(m1) / (time.perf_counter() - t0)
        print(f"local quick run (1 symbol): {local:,.0f} bars/s  = {local / btpy:.2f}x "
              "backtesting.py (target >= 2x)")
        backend = GVisorBackend(root / "gvisor")
        rates = {}
        for market, label in ((m1, "1 symbol"), (m100, "100 symbols")):
            for name in ("Empty", "Sma"):
                rate, trips = lockstep(backend, root, market, name)
                rates[(label, name)] = rate
                step_us = len(market) * len(market.symbols) / rate / trips * 1e6
                print(f"lock-step gVisor {label}, {name}: {rate:,.0f} bars/s "
                      f"({trips:,} round trips, {step_us:.0f} µs each)")
        limit1, sma1 = rates[("1 symbol", "Empty")], rates[("1 symbol", "Sma")]
        print(f"1 symbol: channel limit / trivial = {limit1 / sma1:.2f}x (target <= 1.3x); "
              f"trivial = {sma1 / BACKTRADER_REFERENCE:.2f}x backtrader's reference (>= 1.5x)")
        sma100 = rates[("100 symbols", "Sma")]
        print(f"100 symbols: {sma100:,.0f} bars/s = {sma100 / btpy:.2f}x backtesting.py "
              "(target >= 5x)")


if __name__ == "__main__":
    main()
