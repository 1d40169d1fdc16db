"""The lookahead audit: the real runner re-runs strategies on truncated frames; the trusted
side flags every leaky strategy at the right place and passes every honest one."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from audit_strategies import HONEST, LEAKY
from engine_bars import random_walk_bars

from pitwall.engine.audit import (
    TOLERANCE,
    audit_weights,
    choose_cuts,
    cut_datetime,
    describe,
    split_run,
)
from pitwall.engine.validate import validate_weights
from pitwall.errors import StrategyOutputError
from pitwall.frames import FrameKind, encode_frame
from pitwall.models import LookaheadAudit

SYMBOLS = ["AAA", "BBB", "CCC"]
T0 = dt.datetime(2024, 3, 4, 14, 30, tzinfo=dt.UTC)
N_BARS = 600
BIG = 2**28


def make_bars(n: int = N_BARS) -> pl.DataFrame:
    """Random-walk minute bars for three symbols, sorted by (symbol, ts)."""
    return random_walk_bars(SYMBOLS, n, start=T0, seed=5, base=100.0, sigma=0.002)


BARS = make_bars()
CUTS = choose_cuts(BARS)


def run_runner(tmp_path: Path, source: str, *, cuts: list[int] | None = CUTS,
               max_seconds: float = 120.0, max_bytes: int = BIG, bars: pl.DataFrame = BARS,
               ) -> bytes:
    """``python -m pitwall.sandbox.runner`` on a job dir, unsandboxed; its result channel bytes."""
    job = tmp_path / "job"
    (job / "input").mkdir(parents=True)
    (job / "bundle").mkdir()
    (job / "bundle" / "strategy.py").write_text(source)
    bars.write_ipc(job / "input" / "bars.arrow")
    audit = {"cuts": cuts, "max_bytes": max_bytes, "max_seconds": max_seconds} if cuts else None
    (job / "input" / "spec.json").write_text(json.dumps(
        {"entrypoint": "strategy.py", "params": {}, "seed": 3, "audit": audit}))
    env = {**os.environ, "PYTHONHASHSEED": "0", "TZ": "UTC"}
    proc = subprocess.run([sys.executable, "-m", "pitwall.sandbox.runner", str(job)], env=env,
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def audit_source(tmp_path: Path, source: str, **kwargs: object) -> LookaheadAudit:
    stdout = run_runner(tmp_path, source, **kwargs)  # type: ignore[arg-type]
    full, outputs = split_run(stdout, n_cuts=len(CUTS), max_bytes=BIG)
    clean = validate_weights(full, BARS, SYMBOLS)
    return audit_weights(BARS, clean, CUTS, outputs, SYMBOLS)


def test_cuts_are_spread_deterministic_and_never_the_full_run() -> None:
    ts = BARS.get_column("ts").unique().sort().dt.epoch("us").to_list()
    assert CUTS == choose_cuts(BARS.reverse()) == choose_cuts(BARS)
    assert [ts[120], ts[240], ts[360], ts[480], ts[598]] == CUTS
    assert choose_cuts(make_bars(3)) == []
    assert choose_cuts(make_bars(4)) == [int(make_bars(4).get_column("ts")[2].timestamp() * 1e6)]


@pytest.mark.parametrize("name", sorted(LEAKY))
def test_leaky_strategies_are_flagged_where_the_leak_starts(tmp_path: Path, name: str) -> None:
    verdict = audit_source(tmp_path, LEAKY[name])
    assert verdict.status == "flagged", verdict
    first = verdict.first
    assert first is not None and first.symbol in SYMBOLS and first.n_differences > 0
    assert first.ts <= first.cut and abs(first.full - first.truncated) > TOLERANCE
    cut0 = cut_datetime(CUTS[0])
    if name in ("full_sample_zscore", "global_max_normalisation"):
        assert first.ts == T0  # a full-sample statistic changes every weight, the first too
    if name == "next_close":
        assert first.ts == cut0 and first.cut == cut0  # only the bar at the cut peeks
    if name == "centered_rolling_mean":  # a 21-bar centred window reads 10 bars ahead
        assert cut0 - dt.timedelta(minutes=10) <= first.ts <= cut0
    text = describe(verdict)
    assert "flagged" in text and first.symbol in text and first.cut.isoformat() in text


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_strategies_pass(tmp_path: Path, name: str) -> None:
    verdict = audit_source(tmp_path, HONEST[name])
    assert verdict.status == "passed", verdict
    assert [int(c.timestamp() * 1e6) for c in verdict.cuts_checked] == CUTS
    assert verdict.first is None and verdict.notes == []


def test_a_rerun_that_raises_is_noted_not_fatal(tmp_path: Path) -> None:
    source = LEAKY["next_close"].replace(
        "def s(bars):\n", f"def s(bars):\n    if bars.height < {len(SYMBOLS) * 450}:\n"
        "        raise ValueError('need 450 bars')\n")
    verdict = audit_source(tmp_path, source)
    # The cuts at 120..360 bars raise; those at 480 and 598 still catch the leak.
    assert verdict.status == "flagged"
    assert len(verdict.notes) == 3 and all("ValueError: need 450 bars" in n for n in verdict.notes)
    assert len(verdict.cuts_checked) == 2


def test_budgets_skip_cuts_and_the_verdict_says_not_run(tmp_path: Path) -> None:
    verdict = audit_source(tmp_path, LEAKY["next_close"], max_seconds=0.0)
    assert verdict.status == "not_run" and len(verdict.notes) == len(CUTS)
    assert all("time budget" in n for n in verdict.notes)
    # The full result (~58 kB) fits; no re-run fits beside it with the 64 KiB headroom.
    limit = 130_000
    stdout = run_runner(tmp_path / "b", LEAKY["next_close"], max_bytes=limit)
    full, outputs = split_run(stdout, n_cuts=len(CUTS), max_bytes=limit)
    assert full.num_rows == BARS.height
    assert all(isinstance(o, str) and "output limit" in o for o in outputs)
    assert len(stdout) <= limit


def test_split_run_checks_frames() -> None:
    result = encode_frame(FrameKind.RESULT, b"not arrow")
    with pytest.raises(StrategyOutputError, match="Arrow"):
        split_run(result, n_cuts=1, max_bytes=BIG)
    error = encode_frame(FrameKind.ERROR, b'{"error": "KeyError", "message": "x"}')
    with pytest.raises(StrategyOutputError, match="KeyError: x"):
        split_run(error, n_cuts=1, max_bytes=BIG)
    with pytest.raises(StrategyOutputError, match="more than 2 frames"):
        split_run(error * 3, n_cuts=1, max_bytes=BIG)
    with pytest.raises(StrategyOutputError, match="exceeds"):
        split_run(error, n_cuts=1, max_bytes=10)


def _weights(frame: pl.DataFrame, value: pl.Expr) -> pl.DataFrame:
    return frame.select("ts", "symbol", weight=value)


def _outputs(fn: object) -> list[pl.DataFrame]:
    return [fn(BARS.filter(pl.col("ts") <= cut_datetime(c))) for c in CUTS]  # type: ignore[operator]


def test_tolerance_and_missing_rows_follow_the_engine() -> None:
    full = _weights(BARS, pl.lit(0.25))
    noisy = _outputs(lambda b: _weights(b, pl.lit(0.25 + 1e-14)))
    assert audit_weights(BARS, full, CUTS, [o.to_arrow() for o in noisy], SYMBOLS).status == \
        "passed"
    off = _outputs(lambda b: _weights(b, pl.lit(0.25 + 1e-9)))
    assert audit_weights(BARS, full, CUTS, [o.to_arrow() for o in off], SYMBOLS).status == \
        "flagged"
    # Rows only where the target changes mean the same targets as a row on every bar.
    sparse = _outputs(lambda b: _weights(b.group_by("symbol").head(1), pl.lit(0.25)))
    assert audit_weights(BARS, full, CUTS, [o.to_arrow() for o in sparse], SYMBOLS).status == \
        "passed"


def test_invalid_rerun_output_flags_and_says_why() -> None:
    full = _weights(BARS, pl.lit(0.1))
    nan = _outputs(lambda b: _weights(b, pl.lit(float("nan"))))
    verdict = audit_weights(BARS, full, CUTS, [o.to_arrow() for o in nan], SYMBOLS)
    assert verdict.status == "flagged" and verdict.first is None
    assert "invalid weights" in verdict.notes[0] and "NaN" in verdict.notes[0]
    assert "flagged" in describe(verdict)
    empty = audit_weights(BARS, full, [], [], SYMBOLS)
    assert empty.status == "not_run" and "fewer than four" in describe(empty)
