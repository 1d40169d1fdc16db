"""The lookahead audit: cuts drawn from a secret seed over the places leaks live, each
re-run a fresh process fed only the bars up to its cut (the real runner, unsandboxed
here; through gVisor in tests/e2e/test_audit_e2e.py), and a verdict that says what it
checked. Every leak class is flagged; every honest shape is not."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from audit_strategies import HEADER, HONEST, LEAKY, SPARSE, STATEFUL

from pitwall.engine.audit import (
    BUDGET_PREFIX,
    COMPARE_WINDOW,
    TOLERANCE,
    audit_weights,
    describe,
)
from pitwall.engine.audit_cuts import (
    LEVELS,
    STRUCTURAL,
    Cut,
    CutPlan,
    coverage,
    detectable_fraction,
    miss_probability,
    plan_cuts,
)
from pitwall.engine.validate import validate_weights
from pitwall.frames import decode_frames, decode_result
from pitwall.models import BacktestSpec, LookaheadAudit
from pitwall_executor.datalake.generate import generate_bars
from pitwall_executor.execution.audit import BudgetPacer, prefix_spec
from pitwall_executor.execution.prefix_feed import feed_prefixes

SYMBOLS = ["AAPL", "MSFT"]
BIG = 2**28


def bars_for(days: int, start: dt.date = dt.date(2024, 1, 2)) -> pl.DataFrame:
    """Generated minute bars of two symbols over ``days`` calendar days, (symbol, ts) order."""
    end = start + dt.timedelta(days=days - 1)
    frames = list(generate_bars(SYMBOLS, start, end, seed=11))
    return pl.concat(frames).sort("symbol", "ts")


BARS = bars_for(21)


def _job(root: Path, source: str, spec: dict[str, Any], bars: pl.DataFrame | None) -> Path:
    (root / "input").mkdir(parents=True)
    (root / "bundle").mkdir()
    (root / "bundle" / "strategy.py").write_text(source)
    if bars is not None:
        bars.write_ipc(root / "input" / "bars.arrow")
    (root / "input" / "spec.json").write_text(json.dumps(spec))
    return root


def _runner(job: Path, tmp: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONHASHSEED": "0", "TZ": "UTC", "TMPDIR": str(tmp)}
    return subprocess.Popen([sys.executable, "-m", "pitwall.sandbox.runner", str(job)],
                            env=env, **kwargs)


def full_run(tmp_path: Path, source: str, bars: pl.DataFrame) -> pl.DataFrame:
    """The plain run's validated weights (a process of its own, like the main sandbox)."""
    job = _job(tmp_path / "full", source, {"entrypoint": "strategy.py", "params": {},
                                           "seed": 3}, bars)
    proc = _runner(job, tmp_path / "tmp-full", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    frames = decode_frames(out, max_frames=1, max_payload=BIG)
    return validate_weights(decode_result(frames[0].payload), bars, SYMBOLS)


def rerun(tmp_path: Path, source: str, bars: pl.DataFrame, times: list[int], *,
          mode: str = "audit", deadline: float | None = None) -> list[Any]:
    """The audit's re-runs (or a stepped run): the prefix channel to a fresh runner."""
    spec = BacktestSpec(dataset="sample", universe=SYMBOLS, start=dt.date(2024, 1, 2),
                        end=dt.date(2024, 1, 31), seed=3)
    job = _job(tmp_path / mode, source, prefix_spec(mode, "strategy.py", spec), None)
    proc = _runner(job, tmp_path / f"tmp-{mode}", stdin=subprocess.PIPE,
                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        return feed_prefixes(proc.stdin, proc.stdout, bars, times, max_answer_bytes=BIG,
                             deadline=deadline)
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0


def audit(tmp_path: Path, source: str, bars: pl.DataFrame = BARS, *, seed: int = 7,
          level: str = "default", mode: str = "audit") -> LookaheadAudit:
    weights = full_run(tmp_path, source, bars)
    plan = plan_cuts(bars, seed=seed, level=level)
    return audit_weights(bars, weights, plan,
                         rerun(tmp_path, source, bars, plan.times, mode=mode), SYMBOLS)


def test_the_plan_depends_on_the_secret_seed_and_covers_every_family() -> None:
    plan = plan_cuts(BARS, seed=1)
    assert plan == plan_cuts(BARS.reverse(), seed=1)  # the bars' order does not matter
    assert plan.times != plan_cuts(BARS, seed=2).times
    last = BARS.get_column("ts").max()
    assert all(c.at < last for c in plan.cuts)  # never the full run
    assert plan.times == sorted(set(plan.times))
    counts = coverage(plan.cuts)
    per_family, n_random = LEVELS["default"]
    assert counts["random"] == n_random
    # 21 days starting on a Tuesday: sessions, weeks, a month end; generated bars have no
    # intraday gaps, so that family is empty
    assert {f: counts[f] for f in ("session_end", "session_start", "week_end")} == \
        dict.fromkeys(("session_end", "session_start", "week_end"), per_family)
    assert counts["before_gap"] == 0
    ny = [c.at.astimezone(dt.timezone(dt.timedelta(hours=-5))) for c in plan.cuts]
    for cut, local in zip(plan.cuts, ny, strict=True):
        if "session_end" in cut.kinds:
            assert (local.hour, local.minute) == (15, 59)
        if "session_start" in cut.kinds:
            assert (local.hour, local.minute) == (9, 30)
    assert plan_cuts(BARS.head(3), seed=1).cuts == ()


def test_random_cuts_land_on_distinct_minutes_of_the_hour() -> None:
    plan = plan_cuts(BARS, seed=5, level="thorough")
    minutes = [c.at.minute for c in plan.cuts if "random" in c.kinds]
    assert len(minutes) == LEVELS["thorough"][1]
    assert len(set(minutes)) == min(60, len(minutes))


def test_a_gap_inside_a_session_is_a_family_of_its_own() -> None:
    gappy = BARS.filter(~pl.col("ts").dt.minute().is_between(20, 24)
                        | (pl.col("ts").dt.hour() != 17))
    plan = plan_cuts(gappy, seed=3)
    gaps = [c for c in plan.cuts if "before_gap" in c.kinds]
    assert gaps and all((c.at.hour, c.at.minute) == (17, 19) for c in gaps)


def test_the_power_the_verdict_claims_is_the_binomial_bound() -> None:
    assert miss_probability(0.1, 20) == pytest.approx(0.9**20)
    frac = detectable_fraction(60)
    assert frac is not None and miss_probability(frac, 60) == pytest.approx(0.01)
    assert detectable_fraction(0) is None
    # Drawn over many secret seeds, the random cuts miss a 1-in-10 leak at the claimed rate.
    rng = np.random.default_rng(0)
    ts = BARS.get_column("ts").unique().sort()
    misses = 0
    for seed in range(300):
        leak = set(rng.choice(ts.len(), size=ts.len() // 10, replace=False).tolist())
        idx = {t: i for i, t in enumerate(ts.dt.epoch("us").to_list())}
        random_cuts = [c for c in plan_cuts(BARS, seed=seed).cuts if "random" in c.kinds]
        misses += all(idx[c.ts_us] not in leak for c in random_cuts)
    claimed = miss_probability(0.1, LEVELS["default"][1])
    assert misses / 300 <= claimed + 3 * (claimed * (1 - claimed) / 300) ** 0.5


@pytest.mark.parametrize("name", sorted(LEAKY))
def test_classic_leaks_are_flagged(tmp_path: Path, name: str) -> None:
    verdict = audit(tmp_path, LEAKY[name])
    assert verdict.status == "flagged", verdict
    first = verdict.first
    assert first is not None and first.symbol in SYMBOLS and first.n_differences > 0
    assert first.ts <= first.cut and abs(first.full - first.truncated) > TOLERANCE
    text = describe(verdict)
    assert "flagged" in text and first.symbol in text and first.cut.isoformat() in text


@pytest.mark.parametrize("days", [20, 21, 25, 30])
@pytest.mark.parametrize("name", sorted(SPARSE))
def test_sparse_peeks_are_flagged_whatever_the_range(tmp_path: Path, name: str,
                                                     days: int) -> None:
    # a different secret seed per range: the peek is caught whichever cuts are drawn
    verdict = audit(tmp_path, SPARSE[name], bars_for(days), seed=days)
    assert verdict.status == "flagged", verdict.statement


@pytest.mark.parametrize("mode", ["audit", "audit_fork"])
@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_state_carried_across_calls_cannot_hide_a_leak(tmp_path: Path, name: str,
                                                       mode: str) -> None:
    verdict = audit(tmp_path, STATEFUL[name], mode=mode)
    assert verdict.status == "flagged", verdict.statement


@pytest.mark.parametrize("mode", ["audit", "audit_fork"])
def test_an_honest_strategy_that_caches_is_not_flagged(tmp_path: Path, mode: str) -> None:
    # A research habit: memoise an indicator in a module global and on disk. Each re-run
    # loads the strategy anew with an empty scratch dir, so the cache of an earlier,
    # shorter prefix is never served for a later one.
    source = HONEST["sma_crossover"].replace("def s(bars):\n", """def s(bars):
    import os, tempfile
    path = os.path.join(tempfile.gettempdir(), "memo.arrow")
    if "memo" in globals():
        return globals()["memo"]
    if os.path.exists(path):
        return pl.read_ipc(path)
    out = _s(bars)
    globals()["memo"] = out
    out.write_ipc(path)
    return out


def _s(bars):
""")
    verdict = audit(tmp_path, source, mode=mode)
    assert verdict.status == "no_lookahead_found", verdict.statement


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_strategies_are_never_flagged(tmp_path: Path, name: str) -> None:
    for seed in (1, 2):
        verdict = audit(tmp_path / str(seed), HONEST[name], seed=seed)
        assert verdict.status == "no_lookahead_found", verdict
        assert verdict.first is None and verdict.notes == []
        assert len(verdict.cuts_checked) == len(plan_cuts(BARS, seed=seed).cuts)
        statement = describe(verdict)
        assert "passed" not in statement and f"{len(verdict.cuts_checked)} cuts" in statement
        assert "session ends" in statement and "probability" in statement


def test_a_rerun_that_raises_is_noted_not_fatal(tmp_path: Path) -> None:
    half = BARS.height // 2
    source = LEAKY["next_close"].replace(
        "def s(bars):\n", f"def s(bars):\n    if bars.height < {half}:\n"
        "        raise ValueError('need more bars')\n")
    verdict = audit(tmp_path, source)
    assert verdict.status == "flagged"
    assert verdict.notes and all("ValueError: need more bars" in n for n in verdict.notes)


def test_a_spent_budget_leaves_cuts_unchecked_and_says_so(tmp_path: Path) -> None:
    plan = plan_cuts(BARS, seed=1)
    answers = rerun(tmp_path, HONEST["momentum"], BARS, plan.times, deadline=0.0)
    assert answers == [f"{BUDGET_PREFIX}it ran out"] * len(plan.cuts)
    weights = full_run(tmp_path, HONEST["momentum"], BARS)
    verdict = audit_weights(BARS, weights, plan, answers, SYMBOLS)
    assert verdict.status == "not_run" and "time budget" in describe(verdict)
    assert len(verdict.notes) == 1  # one line for all the cuts the budget left out


def test_the_pacer_keeps_the_budget_and_spreads_the_cuts_it_keeps() -> None:
    plan = plan_cuts(bars_for(60), seed=9)
    n = len(plan.cuts)
    rows = [1000 * (i + 1) for i in range(n)]  # prefixes grow
    budget = sum(rows) // 3

    def run() -> list[int]:
        pacer = BudgetPacer(plan, budget)
        kept = []
        for i in range(n):
            if pacer.keep(i, rows):
                kept.append(i)
                pacer.observe(i, rows[i], 0.01)
        assert pacer.spent <= 1.2 * budget
        return kept

    kept = run()
    assert kept == run()  # the same run thins the same way: its verdict reproduces
    structural = [i for i, c in enumerate(plan.cuts) if set(c.kinds) - {"random"}]
    assert set(structural) <= set(kept) and len(kept) < n  # structural cuts always made
    thirds = [sum(1 for i in kept if i in r and i not in structural)
              for r in (range(n // 3), range(n // 3, 2 * n // 3), range(2 * n // 3, n))]
    assert all(t > 0 for t in thirds), thirds  # thinned across the run, not cut off early
    unlimited = BudgetPacer(plan, None)
    assert all(unlimited.keep(i, rows) for i in range(n))


def _weights(frame: pl.DataFrame, value: pl.Expr) -> pl.DataFrame:
    return frame.select("ts", "symbol", weight=value)


PLAN = plan_cuts(BARS, seed=4)


def _outputs(fn: Any) -> list[Any]:
    return [fn(BARS.filter(pl.col("ts") <= c.at)).to_arrow() for c in PLAN.cuts]


def test_tolerance_and_missing_rows_follow_the_engine() -> None:
    full = _weights(BARS, pl.lit(0.25))
    noisy = _outputs(lambda b: _weights(b, pl.lit(0.25 + 1e-14)))
    assert audit_weights(BARS, full, PLAN, noisy, SYMBOLS).status == "no_lookahead_found"
    off = _outputs(lambda b: _weights(b, pl.lit(0.25 + 1e-9)))
    assert audit_weights(BARS, full, PLAN, off, SYMBOLS).status == "flagged"
    # Rows only where the target changes mean the same targets as a row on every bar.
    sparse = _outputs(lambda b: _weights(b.group_by("symbol").head(1), pl.lit(0.25)))
    assert audit_weights(BARS, full, PLAN, sparse, SYMBOLS).status == "no_lookahead_found"


def test_invalid_rerun_output_flags_and_says_why() -> None:
    full = _weights(BARS, pl.lit(0.1))
    nan = _outputs(lambda b: _weights(b, pl.lit(float("nan"))))
    verdict = audit_weights(BARS, full, PLAN, nan, SYMBOLS)
    assert verdict.status == "flagged" and verdict.first is None
    assert "invalid weights" in verdict.notes[0] and "NaN" in verdict.notes[0]
    assert "flagged" in describe(verdict)
    empty = audit_weights(BARS, full, CutPlan((), "default", 0, 0), [], SYMBOLS)
    assert empty.status == "not_run" and "fewer than four" in describe(empty)


def test_a_verdict_from_a_shared_process_says_what_it_could_not_rule_out() -> None:
    full = _weights(BARS, pl.lit(0.1))
    same = _outputs(lambda b: _weights(b, pl.lit(0.1)))
    verdict = audit_weights(BARS, full, PLAN, same, SYMBOLS, independent=False)
    assert verdict.status == "no_lookahead_found" and "not ruled out" in verdict.statement
    old = LookaheadAudit.model_validate({"status": "passed", "tolerance": 1e-12})
    assert old.status == "no_lookahead_found"  # jobs recorded before the rename still load
    assert Cut(0, ("random",)).at == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert set(STRUCTURAL) < set(coverage([]))


def _in_process(source: str, bars: pl.DataFrame, plan: CutPlan) -> list[Any]:
    """Whole-prefix answers, computed here: what a re-run returned before it sent only the
    compared window."""
    scope: dict[str, Any] = {}
    exec(compile(source, "strategy.py", "exec"), scope)  # test strategies of this suite
    fn = scope["s"]
    return [fn(bars.filter(pl.col("ts") <= c.at)).to_arrow() for c in plan.cuts]


@pytest.mark.parametrize("name", ["next_close", "session_end_peek", "full_sample_zscore",
                                  "sma_crossover", "expanding_mean", "sparse_weights"])
def test_an_answer_holds_its_window_only_and_the_verdict_is_the_whole_prefixs(
        tmp_path: Path, name: str) -> None:
    source = {**LEAKY, **HONEST, **SPARSE}.get(name) or _module_of_changes()
    weights = full_run(tmp_path, source, BARS)
    plan = plan_cuts(BARS, seed=7)
    sent = rerun(tmp_path, source, BARS, plan.times)
    # Per cut: the window's bars and, per symbol, one row before it, never the prefix.
    assert all(isinstance(a, pa.Table) and a.num_rows <= (COMPARE_WINDOW + 1) * len(SYMBOLS)
               for a in sent)
    assert max(a.num_rows for a in sent) < BARS.height / 4
    whole = _in_process(source, BARS, plan)
    trimmed = audit_weights(BARS, weights, plan, sent, SYMBOLS)
    untrimmed = audit_weights(BARS, weights, plan, whole, SYMBOLS)
    assert (trimmed.status, trimmed.first) == (untrimmed.status, untrimmed.first)
    assert trimmed.status == ("flagged" if name in {**LEAKY, **SPARSE} else "no_lookahead_found")


def _module_of_changes() -> str:
    """An honest strategy that writes a row only when its target changes (so the target
    at a window's start comes from a row before it)."""
    return HEADER + (
        "    hour = pl.col('ts').dt.hour()\n"
        "    w = bars.select('ts', 'symbol', weight=(hour % 2).cast(pl.Float64) * 0.4)\n"
        "    return w.filter(pl.col('weight') != pl.col('weight').shift(1).over('symbol'))\n")


def test_a_peek_farther_ahead_than_the_window_is_flagged_at_the_cut(tmp_path: Path) -> None:
    far = HEADER + ("    ahead = pl.col('close').shift(-3000).over('symbol')\n"
                    "    return bars.select('ts', 'symbol', weight=(ahead > pl.col('close'))"
                    ".fill_null(False).cast(pl.Float64) * 0.5)\n")
    verdict = audit(tmp_path, far)
    assert verdict.status == "flagged" and verdict.first is not None
    assert verdict.first.ts <= verdict.first.cut
