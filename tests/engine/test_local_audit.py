"""``pitwall.backtest`` (the quick run in the kernel) runs the lookahead audit too: it
flags every leaky strategy of the test set and passes every honest one, unless told not to."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import pytest
from audit_strategies import HONEST, LEAKY
from engine_bars import random_walk_bars

from pitwall.notebook.quick_run import backtest

SYMBOLS = ["AAA", "BBB"]
T0 = dt.datetime(2024, 3, 4, 14, 30, tzinfo=dt.UTC)


BARS = random_walk_bars(SYMBOLS, 300, start=T0, seed=8, base=50.0, sigma=0.003)


def _strategy(source: str) -> Callable[..., pl.DataFrame]:
    namespace: dict[str, Any] = {}
    exec(compile(source, "strategy.py", "exec"), namespace)
    fn = namespace["s"]
    assert callable(fn)
    return fn  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", sorted(LEAKY))
def test_the_quick_run_flags_a_leaky_strategy(name: str) -> None:
    result = backtest(_strategy(LEAKY[name]), BARS)
    assert result.audit is not None and result.audit.status == "flagged", result.audit
    assert result.metrics.lookahead == result.audit
    first = result.audit.first
    assert first is not None and first.symbol in SYMBOLS and first.ts <= first.cut
    assert result.verdict.startswith("lookahead audit flagged")
    assert result.verdict in str(result)  # print(result) shows it


@pytest.mark.parametrize("name", sorted(HONEST))
def test_the_quick_run_passes_an_honest_strategy(name: str) -> None:
    result = backtest(_strategy(HONEST[name]), BARS)
    assert result.audit is not None and result.audit.status == "no_lookahead_found", \
        result.audit
    assert len(result.audit.cuts_checked) > 20 and result.audit.first is None
    assert result.audit.independent is False  # the kernel's process: said so in the verdict
    assert result.verdict.startswith("no lookahead found") and "not ruled out" in result.verdict


def test_audit_false_skips_it_and_the_numbers_are_the_same() -> None:
    leaky = _strategy(LEAKY["next_close"])
    audited, skipped = backtest(leaky, BARS), backtest(leaky, BARS, audit=False)
    assert skipped.audit is None and skipped.metrics.lookahead is None
    assert skipped.verdict == "lookahead audit skipped"
    assert audited.equity.equals(skipped.equity)


def test_random_draws_are_seeded_per_call_so_they_do_not_look_like_a_leak() -> None:
    def noisy(bars: pl.DataFrame) -> pl.DataFrame:
        # the same draw for a bar whatever comes after it: honest if seeded per call
        noise = np.random.rand(bars.height // len(SYMBOLS)) / 10 + random.random() / 100
        weight = pl.Series(np.tile(noise, len(SYMBOLS)))
        return bars.sort("symbol", "ts").select("ts", "symbol", weight=weight)

    def run(seed: int) -> Any:
        return backtest(noisy, BARS, seed=seed)

    first, again, other = run(1), run(1), run(2)
    assert first.audit is not None and first.audit.status == "no_lookahead_found", first.audit
    assert first.weights.equals(again.weights) and not first.weights.equals(other.weights)


def test_a_re_run_that_raises_is_noted_and_does_not_fail_the_quick_run() -> None:
    def fragile(bars: pl.DataFrame) -> pl.DataFrame:
        if bars.height < BARS.height:
            raise RuntimeError("needs the whole sample")
        return bars.select("ts", "symbol", weight=pl.lit(0.1))

    result = backtest(fragile, BARS)
    assert result.audit is not None and result.audit.status == "not_run"
    assert all("RuntimeError: needs the whole sample" in n for n in result.audit.notes)
