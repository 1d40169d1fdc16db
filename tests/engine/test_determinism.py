"""Determinism inside the runner: seeds, the simulated clock, and byte-identical reruns."""

from __future__ import annotations

import datetime as dt
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
from test_audit import BARS, _job, _runner, rerun

from pitwall.engine.audit_cuts import plan_cuts
from pitwall.frames import decode_frames, decode_result
from pitwall.sandbox.clock import SimulatedClock

CUT = plan_cuts(BARS, seed=1).cuts[0]

NOW = dt.datetime(2024, 3, 15, 20, 59, tzinfo=dt.UTC)

# Unseeded randomness, the wall clock and set order (hash seed) all reach the weights.
RANDOM_STRATEGY = '''
import datetime, random, time
import numpy as np
import polars as pl
import pitwall


@pitwall.vectorized
def s(bars):
    noise = np.random.rand(bars.height) + random.random()
    order = float(sorted(range(5), key=lambda i: hash(f"k{i}"))[0])
    return bars.select("ts", "symbol", weight=pl.Series(noise) + order / 10)
'''

CLOCK_STRATEGY = '''
import datetime as dt
import time
from datetime import date, datetime
import polars as pl
import pitwall


@pitwall.vectorized
def s(bars):
    readings = [time.time(), time.time_ns() / 1e9, datetime.now().timestamp(),
                dt.datetime.now(dt.UTC).timestamp(),
                datetime.utcnow().replace(tzinfo=dt.UTC).timestamp(),
                datetime.combine(date.today(), dt.time()).timestamp(),
                time.clock_gettime(time.CLOCK_REALTIME), time.mktime(time.localtime())]
    assert isinstance(bars.get_column("ts")[0], datetime)  # real values, patched class
    return bars.head(len(readings)).select("ts", "symbol", weight=pl.Series(readings))
'''


def run_runner(tmp_path: Path, source: str) -> bytes:
    """The plain run's raw result channel (the runner, unsandboxed)."""
    job = _job(tmp_path / "job", source, {"entrypoint": "strategy.py", "params": {},
                                          "seed": 3}, BARS)
    proc = _runner(job, tmp_path / "tmp", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    return out


def _table(stdout: bytes) -> pl.DataFrame:
    [frame] = decode_frames(stdout, max_frames=1)
    return pl.DataFrame(decode_result(frame.payload))


def test_unseeded_random_strategy_gives_the_same_bytes_twice(tmp_path: Path) -> None:
    first = run_runner(tmp_path / "one", RANDOM_STRATEGY)
    second = run_runner(tmp_path / "two", RANDOM_STRATEGY)
    assert first == second
    full = _table(first)
    assert full.get_column("weight").n_unique() > BARS.height // 2  # it is random
    # Each re-run is re-seeded: a cut sees the same draws as the full run's prefix would.
    [cut] = rerun(tmp_path, RANDOM_STRATEGY, BARS, [CUT.ts_us])
    assert pl.DataFrame(cut).get_column("weight")[0] == full.get_column("weight")[0]


def test_strategies_read_the_simulated_clock(tmp_path: Path) -> None:
    table = _table(run_runner(tmp_path, CLOCK_STRATEGY))
    last_bar = BARS.get_column("ts").max()
    assert isinstance(last_bar, dt.datetime)
    day = dt.datetime.combine(last_bar.date(), dt.time(), tzinfo=dt.UTC).timestamp()
    expect = [last_bar.timestamp()] * 5 + [day] + [last_bar.timestamp()] * 2
    assert table.get_column("weight").to_list() == pytest.approx(expect, abs=1e-6)
    # On an audit re-run "now" is the last bar before the cut.
    [cut] = rerun(tmp_path, CLOCK_STRATEGY, BARS, [CUT.ts_us])
    assert pl.DataFrame(cut).get_column("weight")[0] == pytest.approx(CUT.at.timestamp(),
                                                                       abs=1e-6)


def test_simulated_clock_patches_and_restores() -> None:
    real_datetime, real_time = dt.datetime, time.time
    clock = SimulatedClock()
    clock.set(NOW)
    clock.install()
    try:
        assert time.time() == NOW.timestamp() and time.time_ns() == int(NOW.timestamp()) * 10**9
        assert dt.datetime.now() == NOW.replace(tzinfo=None)
        assert dt.datetime.now(dt.UTC) == NOW and dt.datetime.utcnow() == NOW.replace(tzinfo=None)
        assert dt.date.today() == NOW.date() and dt.datetime.today().date() == NOW.date()
        assert time.strftime("%Y-%m-%d %H:%M") == "2024-03-15 20:59"
        assert time.gmtime().tm_year == 2024 and time.ctime() == "Fri Mar 15 20:59:00 2024"
        assert time.clock_gettime(time.CLOCK_REALTIME) == NOW.timestamp()
        assert time.clock_gettime_ns(time.CLOCK_MONOTONIC) > 0
        made = dt.datetime(2024, 1, 2, tzinfo=dt.UTC)
        assert type(made) is real_datetime and isinstance(made, dt.datetime)
        assert isinstance(real_datetime(2024, 1, 2), dt.datetime)
        assert not isinstance(dt.date(2024, 1, 2), dt.datetime)
        assert isinstance(made, dt.date) and issubclass(real_datetime, dt.date)
        start = time.monotonic()
        time.sleep(0.01)
        assert time.monotonic() > start  # durations stay real
    finally:
        clock.uninstall()
    assert dt.datetime is real_datetime and time.time is real_time
    assert abs(time.time() - NOW.timestamp()) > 86_400
    with pytest.raises(ValueError, match="aware"):
        clock.set(NOW.replace(tzinfo=None))
