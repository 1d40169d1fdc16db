"""Where the lookahead audit cuts the data, and what the chosen cuts can prove.

A re-run on ``bars[ts <= c]`` exposes a peek at the bars just before ``c``: a strategy
whose weight at ``t`` reads a bar after ``t`` gives a different weight at ``t`` when the
data ends at ``t``. So a cut proves something about the bars at (and just before) it, and
the audit's power is a matter of where the cuts are.

Cuts are drawn per run from a **secret seed** held by the worker (recorded in the run's
manifest afterwards, so the platform can reproduce the audit, while the strategy cannot
predict it), in two families:

* structural boundaries, where leaks live: the last and first bar of a session, the last
  bar of a week and of a month, the bar before an intraday gap. A strategy that peeks at
  *every* instance of one of these is caught by a single cut there;
* random bars over the run, stratified by minute of the hour (each random cut lands on
  a different minute-of-hour while there are minutes left, so 60 of them catch for
  certain a strategy that peeks at one fixed minute of every hour): a leak on a fraction
  ``p`` of bars, placed without knowledge of the cuts, is missed by ``R`` random cuts
  with probability at most ``(1 − p)^R`` (:func:`miss_probability`).

Sessions, weeks and months are counted on the New York calendar date of each bar.
See docs/lookahead-audit.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np
import polars as pl

AuditLevel: TypeAlias = Literal["default", "thorough"]
#: The families of cut, in the order a verdict names them.
STRUCTURAL = ("session_end", "session_start", "week_end", "month_end", "before_gap")
RANDOM = "random"
#: Cuts per structural family and random cuts, by level. The default keeps the audit's
#: cost near the main run's (docs/benchmarks.md, bench/audit.py); ``thorough`` is for
#: final runs.
LEVELS: dict[str, tuple[int, int]] = {"default": (2, 60), "thorough": (6, 240)}
#: The detection probability a verdict quotes ("found with probability ≥ 99%").
CONFIDENCE = 0.99
_NEW_YORK = "America/New_York"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Cut:
    """One cut: the last timestamp the re-run sees (µs since the epoch, UTC) and why it
    was chosen (one or more families)."""

    ts_us: int
    kinds: tuple[str, ...]

    @property
    def at(self) -> dt.datetime:
        return _EPOCH + dt.timedelta(microseconds=self.ts_us)


@dataclass(frozen=True)
class CutPlan:
    """The cuts of one run, with what is needed to state their power."""

    cuts: tuple[Cut, ...]
    level: str
    seed: int
    eligible: int  # timestamps a random cut could land on

    @property
    def times(self) -> list[int]:
        return [c.ts_us for c in self.cuts]


def plan_cuts(bars: pl.DataFrame, *, seed: int, level: str = "default") -> CutPlan:
    """Choose the cuts of a run from its bars and a secret ``seed``.

    Never the last timestamp (that would be the full run) nor the first (nothing to
    compare). Empty when the run has fewer than four timestamps.

    Example
    -------
    >>> import datetime as dt, polars as pl
    >>> ts = [dt.datetime(2024, 1, d, 14, 30 + m, tzinfo=dt.UTC) for d in (2, 3) for m in range(5)]
    >>> bars = pl.DataFrame({"ts": ts, "symbol": ["A"] * 10})
    >>> plan = plan_cuts(bars, seed=1)
    >>> any("session_end" in c.kinds for c in plan.cuts)
    True
    """
    if level not in LEVELS:
        raise ValueError(f"audit level {level!r} is not one of {sorted(LEVELS)}")
    per_family, n_random = LEVELS[level]
    ts = bars.get_column("ts").unique().sort()
    n = ts.len()
    if n < 4:
        return CutPlan((), level, seed, 0)
    us = ts.dt.epoch("us").to_numpy()
    eligible = np.arange(1, n - 1)
    rng = np.random.default_rng(seed)
    kinds: dict[int, list[str]] = {}
    for family, candidates in _boundaries(ts, us).items():
        pool = candidates[(candidates >= 1) & (candidates <= n - 2)]
        for i in rng.choice(pool, size=min(per_family, pool.size), replace=False):
            kinds.setdefault(int(i), []).append(family)
    for i in _stratified(rng, eligible, (us[eligible] // 60_000_000) % 60, n_random):
        kinds.setdefault(int(i), []).append(RANDOM)
    cuts = tuple(Cut(int(us[i]), tuple(k)) for i, k in sorted(kinds.items()))
    return CutPlan(cuts, level, seed, int(eligible.size))


def _stratified(rng: np.random.Generator, items: np.ndarray, strata: np.ndarray,
                k: int) -> list[int]:
    """``k`` items without replacement, each uniform within its stratum, visiting the
    strata in a random order and cycling through them (distinct strata first)."""
    pools = [rng.permutation(items[strata == s]).tolist() for s in rng.permutation(
        np.unique(strata))]
    picked: list[int] = []
    while len(picked) < min(k, items.size):
        for pool in pools:
            if pool and len(picked) < k:
                picked.append(pool.pop())
    return picked


def _boundaries(ts: pl.Series, us: np.ndarray) -> dict[str, np.ndarray]:
    """Indices (into the sorted unique timestamps) of each structural family."""
    local = ts.dt.convert_time_zone(_NEW_YORK).dt.date()
    frame = pl.DataFrame({"i": np.arange(ts.len()), "day": local}).with_columns(
        week=pl.col("day").dt.truncate("1w"), month=pl.col("day").dt.truncate("1mo"))
    same_day = (local.shift(-1) == local).fill_null(False).to_numpy()
    gap = np.zeros(ts.len(), dtype=bool)
    gap[:-1] = (np.diff(us) > 60_000_000) & same_day[:-1]
    last = {key: frame.group_by(key).agg(pl.col("i").max()).get_column("i").to_numpy()
            for key in ("day", "week", "month")}
    first_of_day = frame.group_by("day").agg(pl.col("i").min()).get_column("i").to_numpy()
    return {"session_end": np.sort(last["day"]), "session_start": np.sort(first_of_day),
            "week_end": np.sort(last["week"]), "month_end": np.sort(last["month"]),
            "before_gap": np.flatnonzero(gap)}


def miss_probability(fraction: float, random_cuts: int) -> float:
    """Upper bound on the chance that ``random_cuts`` uniform cuts all miss a leak on a
    ``fraction`` of the bars (placed without knowledge of the cuts).

    >>> round(miss_probability(0.1, 14), 3)
    0.229
    """
    return float((1.0 - fraction) ** random_cuts)


def detectable_fraction(random_cuts: int, confidence: float = CONFIDENCE) -> float | None:
    """The smallest leak fraction found with probability ≥ ``confidence``; None without
    random cuts."""
    if random_cuts <= 0:
        return None
    return float(1.0 - (1.0 - confidence) ** (1.0 / random_cuts))


def coverage(cuts: Sequence[Cut]) -> dict[str, int]:
    """How many checked cuts each family has (a cut may count for several)."""
    counts = dict.fromkeys((*STRUCTURAL, RANDOM), 0)
    for cut in cuts:
        for kind in cut.kinds:
            counts[kind] += 1
    return counts
