"""What the lookahead audit costs and what it catches, and what a stepped run costs.

Three parts, in one run (``docs/benchmarks.md``, "Lookahead audit v2"):

1. **Cost** on the official job path: the demo job (10 symbols x 6 months, SMA crossover)
   submitted to a stack and run by a worker through gVisor, with the audit off, at the
   default level and at ``thorough``. Window: submit to the job's terminal state
   (``run_embedded``), sandbox start, data load, engine, report included. Printed: each
   level's extra time over the audit-off job, as a ratio to that job (goal: default
   <= 2x). Every run's equity must be identical (the audit never changes results).
2. **Detection**: generated leaks, the audit's own cut plan and comparison, re-runs
   computed in this process (the leaks are stateless functions of their frame, so an
   in-process call gives the bytes a sandboxed one does; the sandboxed path is proved by
   tests/engine/test_audit.py and tests/e2e). Structural families (a peek at every session
   end, session start, week end, month end, bar before a gap): detection rate over
   ``--trials`` secret seeds (goal 100 %). Random-bar leaks on a fraction p of bars
   (1/390 .. 1/10; the leaky bars drawn per trial, independently of the cuts): measured
   detection rate beside the power the verdict claims, ``1 - (1-p)^R``.
3. **Stepped** runs on the official path: 10 symbols x 1 year, daily and 30-minute
   schedules, against the plain run (goal: daily <= 3x); every-bar on one month
   (the per-decision cost extrapolated to a year is printed as such).

    .venv/bin/python bench/audit.py [--trials 40] [--skip-stepped] [--whole-prefix]
                                    [--only cost|budgets|detection|stepped]
                                    [--budgets 4,8,16]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pitwall.bundle import build_bundle
from pitwall.engine.audit import COMPARE_WINDOW, audit_weights
from pitwall.engine.audit_cuts import LEVELS, miss_probability, plan_cuts
from pitwall.engine.validate import validate_weights
from pitwall.models import BacktestSpec, JobView, Limits
from pitwall_executor.config import load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.datalake.generate import generate_bars, sample_symbols
from pitwall_executor.execution import audit as audit_execution
from pitwall_executor.orchestration.embedded import run_embedded
from pitwall_executor.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
SMA = (ROOT / "examples" / "sma_crossover.py").read_text()
#: The same strategy declaring how far back it looks (its slow window): a stepped run then
#: hands each decision the last 240 bars per symbol, not the whole prefix.
SMA_LOOKBACK = SMA.replace("@pitwall.vectorized\n", "@pitwall.vectorized(lookback=240)\n")
assert SMA_LOOKBACK != SMA
SYMBOLS = sample_symbols(10)
FRACTIONS = (1 / 390, 1 / 100, 1 / 60, 1 / 10)


def stack(root: Path, end: dt.date) -> Stack:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    generate_dataset(Catalog(root / "lake"), "sample", symbols=SYMBOLS,
                     start=dt.date(2024, 1, 1), end=end, seed=7)
    return Stack.from_config(load_config(environ={}, data_dir=root, sandbox="gvisor"))


def job(st: Stack, end: dt.date, *, code: str = SMA, **spec: Any) -> tuple[float, JobView]:
    bundle = build_bundle({"strategy.py": code}, entrypoint="strategy.py")
    full = BacktestSpec(dataset="sample", universe=SYMBOLS, start=dt.date(2024, 1, 2),
                        end=end, params={"fast": 30, "slow": 240},
                        limits=Limits(timeout_s=1800, memory_mb=2048), **spec)
    started = time.perf_counter()
    view = run_embedded(st, full, bundle)
    seconds = time.perf_counter() - started
    assert view.status.value == "COMPLETED", view.reason
    return seconds, view


#: Contenders of the cost part: the level, and whether the re-runs answer with the whole
#: prefix's weights (as before the compared window, ``COMPARE_WINDOW``) or the window only.
CONTENDERS = {"off": (None, False), "default, whole-prefix answers": ("default", True),
              "default": ("default", False), "thorough": ("thorough", False)}


def cost(root: Path, repeat: int) -> None:
    st = stack(root / "cost", dt.date(2024, 6, 28))
    job(st, dt.date(2024, 6, 28), audit=False)  # warm the cache, the pool and the image
    rows: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    finals: set[float] = set()
    verdicts: dict[str, set[tuple[str, int]]] = {}
    for _ in range(repeat):
        for name, (level, whole) in CONTENDERS.items():
            extra = {"audit": False} if level is None else {"audit_level": level}
            # The worker builds the re-run sandbox's spec.json from this module global.
            audit_execution.ANSWER_WINDOW = None if whole else COMPARE_WINDOW
            try:
                seconds, view = job(st, dt.date(2024, 6, 28), **extra)
            finally:
                audit_execution.ANSWER_WINDOW = COMPARE_WINDOW
            rows[name].append(seconds)
            assert view.metrics is not None
            finals.add(view.metrics.final_equity)
            if (verdict := view.metrics.lookahead) is not None:
                verdicts.setdefault(name, set()).add((verdict.status, len(verdict.cuts_checked)))
    assert len(finals) == 1, f"the audit changed the result: {finals}"
    # The same secret seed and budget draw the same cuts: both answer shapes, one verdict.
    assert verdicts["default"] == verdicts["default, whole-prefix answers"], verdicts
    off = float(np.median(rows["off"]))
    print(f"## cost: demo job (10 symbols x 6 months), submit -> COMPLETED, median of {repeat}")
    print(f"audit off       {off:6.2f} s")
    for name in list(CONTENDERS)[1:]:
        on = float(np.median(rows[name]))
        status, n_cuts = sorted(verdicts[name])[0]
        print(f"audit {name:<31} {on:6.2f} s   {n_cuts:4d} cuts checked ({status})   "
              f"audit = {(on - off) / off:4.2f}x the main run   job = {on / off:4.2f}x")


def budgets(root: Path, repeat: int, values: list[float]) -> None:
    """The default level's cost and the power its verdict claims, by ``audit_budget`` (the
    bars fed to the re-runs, in full-data calls' worth): the trade-off a deployment sets."""
    st = stack(root / "cost", dt.date(2024, 6, 28))
    job(st, dt.date(2024, 6, 28), audit=False)  # warm
    base = st.config
    rows: dict[float, list[float]] = {b: [] for b in values}
    off: list[float] = []
    verdicts: dict[float, Any] = {}
    for _ in range(repeat):
        off.append(job(st, dt.date(2024, 6, 28), audit=False)[0])
        for b in values:
            st.config = base.model_copy(update={"audit_budget": b})
            try:
                seconds, view = job(st, dt.date(2024, 6, 28))
            finally:
                st.config = base
            rows[b].append(seconds)
            assert view.metrics is not None and view.metrics.lookahead is not None
            verdicts[b] = view.metrics.lookahead
    main = float(np.median(off))
    print(f"## default level by audit_budget, median of {repeat} (audit off {main:.2f} s)")
    for b in values:
        on, v = float(np.median(rows[b])), verdicts[b]
        power = {round(1 / p.fraction): 1 - p.miss_probability for p in v.power}
        print(f"budget {b:5.1f}  {on:6.2f} s  audit = {(on - main) / main:4.2f}x   "
              f"{len(v.cuts_checked):3d} cuts ({v.coverage.get('random', 0)} random)   "
              f"claimed power: 1/390 {power.get(390, 0):5.1%}, 1/100 {power.get(100, 0):5.1%},"
              f" 1/10 {power.get(10, 0):5.1%}")


def _peek(mask: pl.Expr) -> Any:
    """A leak: the next close relative to this one, on the bars of ``mask`` only."""
    def fn(bars: pl.DataFrame) -> pl.DataFrame:
        nxt = (pl.col("close").shift(-1) / pl.col("close")).over("symbol").fill_null(0.0)
        return bars.select("ts", "symbol", weight=pl.when(mask).then(nxt * 0.3).otherwise(0.0))
    return fn


def _flagged(fn: Any, bars: pl.DataFrame, seed: int) -> bool:
    plan = plan_cuts(bars, seed=seed)
    universe = bars.get_column("symbol").unique().to_list()
    full = validate_weights(fn(bars), bars, universe)
    outs = [fn(bars.filter(pl.col("ts") <= c.at)).to_arrow() for c in plan.cuts]
    return audit_weights(bars, full, plan, outs, universe).status == "flagged"


def detection(trials: int) -> None:
    bars = pl.concat(list(generate_bars(["AAPL", "MSFT"], dt.date(2024, 1, 2),
                                        dt.date(2024, 2, 29), seed=5)))
    # an intraday gap on some days, so the "bar before a gap" family exists
    bars = bars.filter(~((pl.col("ts").dt.hour() == 17) & pl.col("ts").dt.minute().is_between(
        20, 24) & (pl.col("ts").dt.day() % 3 == 0))).sort("symbol", "ts")
    ny = pl.col("ts").dt.convert_time_zone("America/New_York")
    day = ny.dt.date()
    nxt_ts = pl.col("ts").shift(-1).over("symbol")
    families = {
        "session end": ny.dt.hour().eq(15) & ny.dt.minute().eq(59),
        "session start": ny.dt.hour().eq(9) & ny.dt.minute().eq(30),
        "week end": ny.dt.hour().eq(15) & ny.dt.minute().eq(59) & ny.dt.weekday().eq(5),
        "month end": day.eq(day.max().over(day.dt.month_start()))
        & ny.dt.hour().eq(15) & ny.dt.minute().eq(59),
        "bar before a gap": ((nxt_ts - pl.col("ts")) > dt.timedelta(minutes=1))
        & (nxt_ts.dt.date() == pl.col("ts").dt.date()),
    }
    print(f"## detection: structural leaks, {trials} secret seeds each (goal 100%)")
    for name, mask in families.items():
        hits = sum(_flagged(_peek(mask), bars, seed) for seed in range(trials))
        print(f"peek at every {name:<17} caught {hits}/{trials} = {hits / trials:6.1%}")
    n_random = LEVELS["default"][1]
    print(f"## detection: leaks on a fraction p of bars ({n_random} random cuts, "
          f"{trials} trials each)")
    rng = np.random.default_rng(11)
    ts = bars.get_column("ts").unique().sort()
    for p in FRACTIONS:
        hits = 0
        for seed in range(trials):
            leaky = ts.gather(np.flatnonzero(rng.random(ts.len()) < p))
            hits += _flagged(_peek(pl.col("ts").is_in(leaky.implode())), bars, 10_000 + seed)
        claimed = 1 - miss_probability(p, n_random)
        print(f"p = 1/{round(1 / p):<4} measured {hits / trials:6.1%}   claimed "
              f">= {claimed:6.1%}")


def stepped(root: Path, *, whole_prefix: bool) -> None:
    st = stack(root / "stepped", dt.date(2024, 12, 31))
    year = dt.date(2024, 12, 31)
    job(st, year, audit=False)  # warm
    plain, base_view = job(st, year, audit=False)
    print("## stepped: 10 symbols x 1 year, submit -> COMPLETED (no audit)")
    print(f"plain                    {plain:7.2f} s")
    assert base_view.metrics is not None
    for schedule in ("daily", "30min"):
        seconds, view = job(st, year, code=SMA_LOOKBACK, audit=False, stepped=schedule)
        assert view.metrics is not None
        print(f"stepped {schedule:<6} lookback=240 {seconds:7.2f} s   "
              f"{seconds / plain:6.2f}x the plain run")
    if whole_prefix:  # quadratic in the bars: each decision recomputes the whole prefix
        seconds, _ = job(st, year, audit=False, stepped="daily")
        print(f"stepped daily whole prefix {seconds:7.2f} s   {seconds / plain:6.2f}x")
    month = dt.date(2024, 1, 31)
    base, _ = job(st, month, audit=False)
    seconds, _ = job(st, month, code=SMA_LOOKBACK, audit=False, stepped="bar")
    decisions = 21 * 390
    per = (seconds - base) / decisions
    print(f"stepped bar lookback=240 {seconds:7.2f} s on one month ({decisions} decisions, "
          f"{per * 1e3:.1f} ms each; a year would take ~{per * 252 * 390 / 60:.0f} min)")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-stepped", action="store_true")
    parser.add_argument("--budgets", default="",
                        help="comma-separated audit_budget values: print the default level's "
                        "cost and claimed power for each")
    parser.add_argument("--only", choices=("cost", "budgets", "detection", "stepped"),
                        help="run one part only")
    parser.add_argument("--whole-prefix", action="store_true",
                        help="also time stepped daily without a declared lookback (slow)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o755)
        root = Path(tmp)
        if args.only in (None, "cost"):
            cost(root, args.repeat)
        if args.only == "budgets" or (args.only is None and args.budgets):
            budgets(root, args.repeat, [float(b) for b in (args.budgets or "4,8,16").split(",")])
        if args.only in (None, "detection"):
            detection(args.trials)
        if args.only == "stepped" or (args.only is None and not args.skip_stepped):
            stepped(root, whole_prefix=args.whole_prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
