"""Universes named by a rule evaluated point in time (docs/reference-data.md).

A rule is a small declarative sentence, parsed here (never evaluated as code)::

    dollar_volume_20d > 1e6 and price >= 5 at month_start

``condition (and condition)* [at schedule]``, where a condition is ``metric op number``:

* ``dollar_volume_<N>d``: mean daily dollar volume (Σ close·volume) of the last N sessions;
* ``volume_<N>d``: mean daily share volume of the last N sessions;
* ``price``: the last close;

``op`` is one of ``> >= < <=`` and ``schedule`` one of ``month_start`` (default),
``week_start``, ``day``. At each scheduled session the rule is evaluated on the sessions
strictly before it, over the symbols listed that day (per the listings when given, else
those that traded the session before), so members that later delist are in, and a
symbol listed later joins when it qualifies. Membership holds until the next evaluation.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
import re
from collections.abc import Callable

import polars as pl

from pitwall.reference import exchange_day

SCHEDULES = ("month_start", "week_start", "day")
_OPS: dict[str, Callable[[pl.Expr, float], pl.Expr]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_METRIC = re.compile(r"^(?:(dollar_volume|volume)_(\d{1,3})d|price)$")
_HELP = ("write e.g. 'dollar_volume_20d > 1e6 and price >= 5 at month_start' (metrics: "
         "dollar_volume_<N>d, volume_<N>d, price; ops: > >= < <=; schedules: "
         f"{', '.join(SCHEDULES)})")


@dataclasses.dataclass(frozen=True)
class Condition:
    """``metric op value``; ``window`` is N of a ``…_<N>d`` metric (0 for price)."""

    metric: str  # "dollar_volume", "volume" or "price"
    window: int
    op: str
    value: float

    @property
    def column(self) -> str:
        """The name of the metric's column in :func:`evaluate`'s working frame."""
        return self.metric if self.metric == "price" else f"{self.metric}_{self.window}d"


@dataclasses.dataclass(frozen=True)
class UniverseRule:
    """A parsed rule; :meth:`parse` is the only way in."""

    conditions: tuple[Condition, ...]
    schedule: str = "month_start"

    @classmethod
    def parse(cls, text: str) -> UniverseRule:
        """Parse ``text``; a :class:`ValueError` says what is wrong and what to write.

        Examples
        --------
        >>> UniverseRule.parse("dollar_volume_20d > 1e6 at month_start").conditions[0].value
        1000000.0
        """
        body, _, schedule = text.strip().partition(" at ")
        schedule = schedule.strip() or "month_start"
        if schedule not in SCHEDULES:
            raise ValueError(f"universe rule {text!r}: unknown schedule {schedule!r}; {_HELP}")
        conditions = []
        for part in re.split(r"\s+and\s+", body.strip()):
            tokens = part.split()
            if len(tokens) != 3:
                raise ValueError(f"universe rule {text!r}: {part!r} is not 'metric op "
                                 f"number'; {_HELP}")
            name, op, number = tokens
            match = _METRIC.match(name)
            if match is None or op not in _OPS:
                bad = name if match is None else op
                raise ValueError(f"universe rule {text!r}: unknown {bad!r}; {_HELP}")
            try:
                value = float(number)
            except ValueError:
                raise ValueError(f"universe rule {text!r}: {number!r} is not a number; "
                                 f"{_HELP}") from None
            window = int(match.group(2) or 0)
            if match.group(1) and window < 1:
                raise ValueError(f"universe rule {text!r}: a window must be >= 1 day")
            conditions.append(Condition(match.group(1) or "price", window, op, value))
        return cls(tuple(conditions), schedule)


def _daily(bars: pl.DataFrame) -> pl.DataFrame:
    """``symbol, day, close, volume, dollar_volume`` per symbol and exchange session."""
    day = exchange_day(pl.col("ts")).alias("day")
    return (bars.group_by("symbol", day).agg(
        pl.col("close").sort_by("ts").last(),
        pl.col("volume").cast(pl.Float64).sum(),
        (pl.col("close") * pl.col("volume")).sum().alias("dollar_volume"))
        .sort("symbol", "day"))


def _evaluation_days(days: pl.Series, schedule: str) -> pl.Series:
    """The sessions the rule is evaluated at: every day, or the first of a week/month."""
    unique = days.unique().sort()
    if schedule == "day":
        return unique
    key = unique.dt.truncate("1mo" if schedule == "month_start" else "1w")
    return unique.filter(key.is_first_distinct())


def evaluate(rule: UniverseRule | str, bars: pl.DataFrame,
             listings: pl.DataFrame | None = None) -> pl.DataFrame:
    """Members at each evaluation: ``day, symbol`` (sorted), using sessions before ``day``.

    ``bars`` need ``ts, symbol, close, volume``; ``listings`` (``pitwall.reference``)
    decide who is listed on a day, else a symbol that traded the session before is.
    """
    rule = UniverseRule.parse(rule) if isinstance(rule, str) else rule
    daily = _daily(bars)
    metrics = [pl.col(c.metric).rolling_mean(c.window).over("symbol").alias(c.column)
               for c in rule.conditions if c.metric != "price"]
    known = daily.with_columns(*metrics, pl.col("close").alias("price"))
    evals = _evaluation_days(daily["day"], rule.schedule).to_frame("day")
    grid = evals.join(daily.select("symbol").unique(), how="cross").sort("day")
    # The latest session strictly before the evaluation day: what is known at its open.
    state = grid.join_asof(known.sort("day").rename({"day": "known_day"}),
                           left_on="day", right_on="known_day", by="symbol",
                           strategy="backward", allow_exact_matches=False,
                           check_sortedness=False)
    ok = [_OPS[c.op](pl.col(c.column), c.value).fill_null(False) for c in rule.conditions]
    state = state.filter(pl.all_horizontal(ok), pl.col("known_day").is_not_null())
    if listings is not None and not listings.is_empty():
        listed = state.join(listings.select("symbol", "first_day", "last_day"), on="symbol")
        state = listed.filter(pl.col("day").is_between(pl.col("first_day"), pl.col("last_day")))
    else:
        previous = evals.with_columns(pl.col("day").alias("_d")).join_asof(
            daily.select(pl.col("day").unique().sort().alias("prev")),
            left_on="day", right_on="prev", strategy="backward", allow_exact_matches=False)
        state = state.join(previous.select("day", "prev"), on="day").filter(
            pl.col("known_day") == pl.col("prev"))
    return state.select("day", "symbol").unique().sort("day", "symbol")


@dataclasses.dataclass(frozen=True)
class UniverseReport:
    """How the universe moved: evaluations, symbols that entered after the first
    evaluation, symbols that left (dropped out or delisted), sizes at both ends."""

    evaluations: int
    entered: int
    left: int
    first_size: int
    last_size: int

    @classmethod
    def of(cls, members: pl.DataFrame) -> UniverseReport:
        """Count the movements of an :func:`evaluate` result."""
        days = members["day"].unique().sort()
        if days.is_empty():
            return cls(0, 0, 0, 0, 0)
        sets = [set(g["symbol"]) for _, g in members.group_by("day", maintain_order=True)]
        entered: set[str] = set()
        left: set[str] = set()
        for before, after in itertools.pairwise(sets):
            entered |= after - before
            left |= before - after
        return cls(len(days), len(entered), len(left), len(sets[0]), len(sets[-1]))


def membership(bars: pl.DataFrame, members: pl.DataFrame) -> pl.Series:
    """Per bar row: whether its symbol is a member at the latest evaluation on or before it."""
    day = exchange_day(pl.col("ts")).alias("_day")
    keyed = bars.select("symbol", day).with_row_index("_row")
    flagged = members.with_columns(pl.lit(True).alias("_in"))
    latest = members.select(pl.col("day").unique().sort().alias("_eval"))
    on = keyed.sort("_day").join_asof(latest, left_on="_day", right_on="_eval",
                                      strategy="backward")
    hit = on.join(flagged, left_on=["_eval", "symbol"], right_on=["day", "symbol"],
                  how="left").sort("_row")
    return hit["_in"].fill_null(False).rename("member")
