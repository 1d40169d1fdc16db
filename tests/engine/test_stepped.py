"""Stepped runs: the real runner answers at each decision time on the prefix it was fed
(unsandboxed here; through gVisor in tests/e2e/test_stepped.py). An honest strategy's
weights at the decision times are the plain run's; a leaking one loses its edge."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from audit_strategies import HONEST, LEAKY
from test_audit import BARS, SYMBOLS, bars_for, full_run, rerun

from pitwall.engine.decisions import decision_label, decision_times
from pitwall.engine.validate import validate_weights
from pitwall.engine.vectorized import run_vectorized
from pitwall.models import BacktestSpec, Costs, check_schedule


def stepped(tmp_path: Path, source: str, bars: pl.DataFrame, schedule: str) -> pl.DataFrame:
    answers = rerun(tmp_path, source, bars, decision_times(bars, schedule), mode="stepped")
    assert all(not isinstance(a, str) for a in answers), answers
    frames = [pl.DataFrame(pl.from_arrow(a)) for a in answers]
    return validate_weights(pl.concat(frames, how="vertical_relaxed"), bars, SYMBOLS)


def test_decision_times_follow_the_schedule() -> None:
    ts = BARS.get_column("ts").unique().sort()
    assert decision_times(BARS, "bar") == ts.dt.epoch("us").to_list()
    daily = decision_times(BARS, "daily")
    days = ts.dt.convert_time_zone("America/New_York").dt.date().unique()
    assert len(daily) == days.len()  # one per session: its last bar
    halfhour = decision_times(BARS, "30min")
    assert len(halfhour) == 13 * days.len()  # 390 minutes in 30-minute blocks
    at = decision_times(BARS, "at:10:00,15:55")
    assert len(at) == 2 * days.len()
    assert decision_label("30min") == "every 30 minutes"
    for bad in ("hourly", "0min", "999min", "at:25:00"):
        with pytest.raises(ValueError, match="stepped schedule"):
            check_schedule(bad)
    with pytest.raises(ValueError, match="vectorized"):
        BacktestSpec(dataset="d", universe=["A"], start="2024-01-02", end="2024-01-03",
                     engine="event", stepped="daily")


@pytest.mark.parametrize("name", sorted(HONEST))
def test_an_honest_strategy_decides_the_same_at_every_decision_time(tmp_path: Path,
                                                                     name: str) -> None:
    bars = bars_for(7)
    plain = full_run(tmp_path, HONEST[name], bars)
    step = stepped(tmp_path, HONEST[name], bars, "30min")
    at = pl.Series(decision_times(bars, "30min")).cast(pl.Datetime("us")).dt.replace_time_zone(
        "UTC")
    expected = plain.filter(pl.col("ts").is_in(at.implode())).sort("symbol", "ts")
    assert step.sort("symbol", "ts").equals(expected), name


def test_every_bar_stepped_is_the_plain_run_exactly(tmp_path: Path) -> None:
    bars = bars_for(2)  # every bar of two sessions: 780 decisions
    plain = full_run(tmp_path, HONEST["momentum"], bars)
    step = stepped(tmp_path, HONEST["momentum"], bars, "bar")
    assert step.sort("symbol", "ts").equals(plain.sort("symbol", "ts"))


def _in_process(source: str) -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(source, "strategy.py", "exec"), namespace)
    return namespace["s"]


@pytest.mark.parametrize("name", sorted(LEAKY))
def test_a_leaking_strategy_stepped_cannot_see_the_future(tmp_path: Path, name: str) -> None:
    bars = bars_for(10)
    times = decision_times(bars, "daily")
    step = stepped(tmp_path, LEAKY[name], bars, "daily")
    # What the rule gives when it is only ever shown the past: the strategy called here
    # on each prefix, its weights at the prefix's last bar kept.
    fn = _in_process(LEAKY[name])
    expected = []
    for t in times:
        # through Arrow IPC, as the sandbox gets it (a frame sorted here carries polars'
        # sortedness flag, which changes the rounding of a group-wise mean by ~1e-13)
        buf = io.BytesIO()
        bars.filter(pl.col("ts").dt.epoch("us") <= t).write_ipc_stream(buf)
        prefix = pl.read_ipc_stream(io.BytesIO(buf.getvalue()))
        expected.append(fn(prefix).filter(pl.col("ts").dt.epoch("us") == t))
    point_in_time = validate_weights(pl.concat(expected), bars, SYMBOLS)
    assert step.sort("symbol", "ts").equals(point_in_time.sort("symbol", "ts"))
    plain = full_run(tmp_path, LEAKY[name], bars)
    at = plain.filter(pl.col("ts").dt.epoch("us").is_in(times)).sort("symbol", "ts")
    assert not at.equals(point_in_time.sort("symbol", "ts"))  # the leak is gone
    a = run_vectorized(bars, step, capital=1e6, costs=Costs()).equity
    b = run_vectorized(bars, point_in_time, capital=1e6, costs=Costs()).equity
    assert a.equals(b)
