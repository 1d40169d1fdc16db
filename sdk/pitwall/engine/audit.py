"""The lookahead audit, trusted side: decode the re-runs, compare, state the verdict.

A vectorized strategy sees its whole frame, so nothing stops it from reading the future
by mistake (a full-sample z-score, a centered window, ``shift(-1)``). The audit re-runs it
on ``bars[ts <= cut]`` at cuts the strategy cannot predict (:mod:`pitwall.engine.audit_cuts`),
each re-run in a fresh process that never held a later bar, and compares the weights up
to each cut with the full run's. An honest strategy decides at ``t`` from bars up to ``t``
only, so removing later bars cannot change its weights.

What is compared is what the engine executes: the *effective* target of every bar in the
last ``COMPARE_WINDOW`` timestamps up to the cut (a missing row keeps the previous target,
0 before the first). A peek ``h`` bars ahead changes the weight at the cut itself and at
the ``h - 1`` bars before it, so the window holds every bar a one-bar peek can show on and
all of a peek up to ``COMPARE_WINDOW`` bars ahead; the power a verdict claims counts the
cut bar only. The window keeps each cut's cost independent of how long the run is: the
sandbox sends only the window's rows and, per symbol, the last row before it (which fixes
the effective target at the window's start), never the whole prefix's. Two targets ``a``
and ``b`` differ when ``|a − b| > TOLERANCE · max(1, |a|, |b|)``: weights are fractions of
equity, so this is 1e-12 absolute for ordinary weights and 1e-12 relative for large ones,
far above float noise of a deterministic computation and far below any real signal.

The verdict never says more than was checked: which cuts, of which kind, and the chance
that the random ones missed a sparse leak (docs/lookahead-audit.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt
import polars as pl
import pyarrow as pa

from pitwall.engine.audit_cuts import (
    Cut,
    CutPlan,
    coverage,
    detectable_fraction,
    miss_probability,
    plan_cuts,
)
from pitwall.engine.grid import BarGrid, FloatGrid, build_grid, target_grid
from pitwall.engine.validate import validate_weights
from pitwall.errors import StrategyOutputError
from pitwall.models import AuditFinding, DetectionPower, LookaheadAudit

TOLERANCE = 1e-12
#: Timestamps compared before (and at) each cut: 2.6 sessions of minute bars.
COMPARE_WINDOW = 1024
#: Leak fractions whose miss probability a verdict reports: once a session, once every
#: 100 bars, once an hour, one bar in ten.
POWER_FRACTIONS = (1 / 390, 1 / 100, 1 / 60, 1 / 10)

#: How the worker marks a cut it did not call for lack of time (one note for all of them).
BUDGET_PREFIX = "not checked (time budget): "

#: One re-run's output: its weights, or why it has none (raised, skipped, missing).
CutOutput: TypeAlias = pa.Table | str

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def choose_cuts(bars: pl.DataFrame, *, seed: int = 0, level: str = "default") -> list[int]:
    """The cut timestamps (µs since the epoch, UTC) :func:`plan_cuts` picks for ``seed``."""
    return plan_cuts(bars, seed=seed, level=level).times


def cut_datetime(cut_us: int) -> dt.datetime:
    """A cut as an aware UTC datetime."""
    return _EPOCH + dt.timedelta(microseconds=cut_us)


def audit_weights(
    bars: pl.DataFrame,
    full: pl.DataFrame,
    cuts: Sequence[int] | CutPlan,
    outputs: Sequence[CutOutput],
    universe: Sequence[str],
    *,
    tolerance: float = TOLERANCE,
    independent: bool = True,
    window: int = COMPARE_WINDOW,
) -> LookaheadAudit:
    """Compare each re-run with the full run's validated weights ``full``; the verdict.

    ``bars`` are the full run's bars (sorted by ``symbol, ts``, as the engine needs them);
    the re-run of cut ``c`` saw ``bars[ts <= c]``. Its output is validated against those
    bars from its first row on, and compared on the last ``window`` timestamps up to ``c``
    (:func:`window_start`); rows before that only carry a target into the window.

    Example
    -------
    >>> import datetime as dt, polars as pl
    >>> ts = [dt.datetime(2024, 1, 2, 14, 30 + i, tzinfo=dt.UTC) for i in range(6)]
    >>> close = [1.0, 2, 3, 4, 5, 6]
    >>> bars = pl.DataFrame({"ts": ts, "symbol": ["A"] * 6, "open": close, "close": close})
    >>> leaky = lambda b: b.select("ts", "symbol", weight=pl.col("close") / pl.col("close").max())
    >>> cuts = choose_cuts(bars, seed=7)
    >>> outs = [leaky(bars.filter(pl.col("ts") <= cut_datetime(c))).to_arrow() for c in cuts]
    >>> verdict = audit_weights(bars, leaky(bars), cuts, outs, ["A"])
    >>> verdict.status, verdict.first.ts.minute, verdict.first.symbol
    ('flagged', 30, 'A')
    """
    plan = cuts if isinstance(cuts, CutPlan) else CutPlan(
        tuple(Cut(int(c), ()) for c in cuts), "default", 0, 0)
    notes: list[str] = []
    checked: list[dt.datetime] = []
    checked_cuts: list[Cut] = []
    over_budget = 0
    findings: list[AuditFinding] = []
    invalid = False
    grid = build_grid(bars)
    full_targets = target_grid(grid, bars, full)
    ts_us = bars.get_column("ts").dt.epoch("us")
    for planned, output in zip(plan.cuts, outputs, strict=True):
        cut = planned.at
        if isinstance(output, str):
            if output.startswith(BUDGET_PREFIX):
                over_budget += 1
            else:
                notes.append(f"cut {cut.isoformat()}: not checked, {output}")
            continue
        start = window_start(grid.ts, planned.ts_us, window)
        earliest = _first_ts(output)
        lo = start if earliest is None else min(start, earliest)
        cut_bars = bars.filter(ts_us.is_between(lo, planned.ts_us))
        try:
            weights = validate_weights(output, cut_bars, universe)
        except StrategyOutputError as exc:
            invalid = True
            notes.append(f"cut {cut.isoformat()}: the re-run returned invalid weights "
                         f"although the full run's were valid ({exc})")
            continue
        checked.append(cut)
        checked_cuts.append(planned)
        finding = _compare(cut, grid, full_targets, cut_bars, weights, tolerance, start)
        if finding is not None:
            findings.append(finding)
    if over_budget:
        notes.append(f"{over_budget} of {len(plan.cuts)} cuts not checked within the audit's "
                     "time budget (random cuts are thinned at random first; raise the "
                     "executor's audit_budget to check them all)")
    first = min(findings, key=lambda f: (f.ts, f.cut)) if findings else None
    if first is not None or invalid:
        status = "flagged"
    elif checked:
        status = "no_lookahead_found"
    else:
        status = "not_run"
        if not plan.cuts:
            notes.append("the run has fewer than four timestamps; nothing to cut")
    counts = coverage(checked_cuts)
    n_random = counts.get("random", 0)
    audit = LookaheadAudit(
        status=status, tolerance=tolerance, cuts_checked=checked, first=first, notes=notes,
        level=plan.level if plan.level in ("default", "thorough") else "default",
        coverage=counts, independent=independent,
        power=[DetectionPower(fraction=p, miss_probability=miss_probability(p, n_random))
               for p in POWER_FRACTIONS] if n_random else [],
        detectable_fraction=detectable_fraction(n_random))
    return audit.model_copy(update={"statement": describe(audit)})


def window_start(ts_us: npt.NDArray[np.int64], cut_us: int, window: int) -> int:
    """The first of the last ``window`` timestamps up to ``cut_us`` in the sorted ``ts_us``
    (µs): where a cut's comparison starts. The sandbox computes the same from its prefix."""
    end = int(np.searchsorted(ts_us, cut_us, side="right"))
    return int(ts_us[max(end - window, 0)]) if end else cut_us


def _first_ts(output: pa.Table) -> int | None:
    """The earliest ``ts`` of a re-run's rows (µs), or None when it has none to read (the
    validation names what is wrong with it)."""
    try:
        ts = pl.from_arrow(output.select(["ts"])).get_column("ts")  # type: ignore[union-attr]
        first = ts.dt.epoch("us").min()
    except Exception:
        return None
    return int(first) if isinstance(first, int) else None


def _compare(cut: dt.datetime, grid: BarGrid, full_targets: FloatGrid, cut_bars: pl.DataFrame,
             weights: pl.DataFrame, tolerance: float, start_us: int) -> AuditFinding | None:
    """The earliest bar (then the first symbol) from ``start_us`` on whose effective target
    differs, if any.

    Targets are compared on the engine's grid, as it will execute them: forward-filled,
    0 before a symbol's first weight, and only where the symbol has a bar. ``cut_bars``
    span a run of the full grid's timestamps that ends at the cut.
    """
    cut_grid = build_grid(cut_bars)
    b = target_grid(cut_grid, cut_bars, weights)
    index = {s: i for i, s in enumerate(grid.symbols)}
    rows = np.array([index[s] for s in cut_grid.symbols], dtype=np.int64)
    first_col = int(np.searchsorted(grid.ts, cut_grid.ts[0]))
    a = full_targets[rows, first_col: first_col + cut_grid.shape[1]]
    scale = np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    compared = cut_grid.present & (cut_grid.ts >= start_us)[None, :]
    differs = (np.abs(a - b) > tolerance * scale) & compared
    if not differs.any():
        return None
    col = int(np.flatnonzero(differs.any(axis=0))[0])
    row = int(np.flatnonzero(differs[:, col])[0])
    return AuditFinding(cut=cut, ts=cut_datetime(int(cut_grid.ts[col])),
                        symbol=cut_grid.symbols[row], full=float(a[row, col]),
                        truncated=float(b[row, col]), n_differences=int(differs.sum()))


_FAMILY_WORDS = {"session_end": "session ends", "session_start": "session starts",
                 "week_end": "week ends", "month_end": "month ends",
                 "before_gap": "bars before a gap", "random": "random bars"}


def pending(level: Literal["default", "thorough"]) -> LookaheadAudit:
    """The verdict a run's metrics carry while its audit still runs (they are shown
    before it ends; the job's terminal state carries the real verdict)."""
    audit = LookaheadAudit(status="pending", tolerance=TOLERANCE, level=level)
    return audit.model_copy(update={"statement": describe(audit)})


def describe(audit: LookaheadAudit) -> str:
    """One sentence for a job's reason, the CLI, the API, the report and the lab: what was
    found, and for a clean run exactly what was checked and how strong that is."""
    if audit.status == "pending":
        return ("lookahead audit running: these metrics are shown before its verdict, which "
                "comes with the job's end")
    if audit.status == "exact":
        return ("no lookahead possible: a stepped run gave the strategy only the bars up to "
                "each decision time")
    if audit.status == "not_run":
        return "lookahead audit not run: " + ("; ".join(audit.notes) or "no cut was checked")
    if audit.status == "flagged":
        if audit.first is None:
            return "lookahead audit flagged: " + "; ".join(audit.notes)
        f = audit.first
        return (f"lookahead audit flagged: the weight of {f.symbol} at {f.ts.isoformat()} is "
                f"{f.full:.6g} with all the data but {f.truncated:.6g} when the data ends at "
                f"{f.cut.isoformat()}; the strategy reads bars after the time it decides "
                f"({f.n_differences} differing bars at that cut)")
    n = len(audit.cuts_checked)
    parts = [f"{k} {_FAMILY_WORDS.get(fam, fam)}" for fam, k in audit.coverage.items() if k]
    text = f"no lookahead found at {n} cuts ({', '.join(parts) or 'unlabelled'})"
    structural = [_FAMILY_WORDS[f] for f in ("session_end", "session_start", "week_end",
                                             "month_end") if audit.coverage.get(f)]
    if structural:
        text += (f"; a strategy peeking at every one of its {', '.join(structural)} would "
                 "have been caught")
    if audit.detectable_fraction is not None:
        text += (f"; a leak on {audit.detectable_fraction:.0%} of bars or more would have been "
                 "found with probability >= 99%")
        sparse = next((p for p in audit.power if p.fraction < 0.01), None)
        if sparse is not None:
            text += (f", one on 1 bar in {round(1 / sparse.fraction)} with probability "
                     f"{1 - sparse.miss_probability:.0%}")
    if not audit.independent:
        text += ("; the re-runs shared the full run's process (a local quick run), so state "
                 "cached across calls was not ruled out")
    return text
