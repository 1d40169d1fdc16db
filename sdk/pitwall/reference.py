"""Point-in-time reference data: listings and corporate actions (docs/reference-data.md).

Bars stay unadjusted. Two tables say what happened to the securities behind them:

* ``listings``: one row per (security, symbol) period: ``security_id`` (survives
  renames), ``symbol``, ``first_day`` and ``last_day`` traded under that symbol, and
  ``delisted`` (true on the last row of a security that stopped trading);
* ``corporate_actions``: ``security_id``, ``symbol`` (in effect before the action),
  ``kind`` (``split``, ``dividend``, ``rename``), ``announce_date``, ``effective_date``
  (ex-date for a dividend, first day of the new share count or symbol otherwise),
  ``ratio`` (new shares per old share, 2.0 for a 2:1 split, 0.1 for a 1:10 reverse
  split), ``amount`` (cash per share of a dividend) and ``new_symbol`` (of a rename).

This module holds their schemas and the checks every writer runs; the engine applies
the actions (:mod:`pitwall.engine.corporate`) and :func:`adjusted` gives a strategy the
back-adjusted prices it may know at a given time.
"""

from __future__ import annotations

import datetime as dt
import difflib
from zoneinfo import ZoneInfo

import polars as pl

from pitwall.errors import DataError

LISTINGS_SCHEMA = pl.Schema({
    "security_id": pl.String(),
    "symbol": pl.String(),
    "first_day": pl.Date(),
    "last_day": pl.Date(),
    "delisted": pl.Boolean(),
})

ACTIONS_SCHEMA = pl.Schema({
    "security_id": pl.String(),
    "symbol": pl.String(),
    "kind": pl.String(),
    "announce_date": pl.Date(),
    "effective_date": pl.Date(),
    "ratio": pl.Float64(),
    "amount": pl.Float64(),
    "new_symbol": pl.String(),
})

KINDS = ("split", "dividend", "rename")
EXCHANGE_TZ = "America/New_York"  # the calendar of listing and action days
# Problems listed in one error before "and N more"; enough to fix a file in one pass.
_MAX_LISTED = 20


def exchange_day(ts: pl.Expr) -> pl.Expr:
    """The exchange (New York) date of a UTC timestamp column: the day tables speak of."""
    return ts.dt.convert_time_zone(EXCHANGE_TZ).dt.date()


def empty_listings() -> pl.DataFrame:
    """A listings table without rows."""
    return pl.DataFrame(schema=LISTINGS_SCHEMA)


def empty_actions() -> pl.DataFrame:
    """A corporate-actions table without rows."""
    return pl.DataFrame(schema=ACTIONS_SCHEMA)


def _rows(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with a ``row`` column (1-based) unless it already has one."""
    return frame if "row" in frame.columns else frame.with_row_index("row", offset=1)


def _listing_problems(listings: pl.DataFrame) -> list[str]:
    rows = _rows(listings)
    problems = [f"listings row {r}: missing {c}" for c in LISTINGS_SCHEMA.names()
                for r in rows.filter(pl.col(c).is_null())["row"]]
    bad = rows.filter(pl.col("first_day") > pl.col("last_day"))
    problems += [f"listings row {r['row']}: {r['symbol']} first_day {r['first_day']} is after "
                 f"last_day {r['last_day']}" for r in bad.iter_rows(named=True)]
    overlap = (rows.sort("symbol", "first_day")
               .with_columns(prev=pl.col("last_day").shift(1).over("symbol"))
               .filter(pl.col("first_day") <= pl.col("prev")))
    problems += [f"listings row {r['row']}: symbol {r['symbol']} is listed twice on "
                 f"{r['first_day']}; periods of one symbol must not overlap"
                 for r in overlap.iter_rows(named=True)]
    return problems


def _action_problems(actions: pl.DataFrame, listings: pl.DataFrame) -> list[str]:
    rows = _rows(actions)
    problems: list[str] = []
    for r in rows.iter_rows(named=True):
        where = f"corporate_actions row {r['row']} ({r['symbol']} {r['kind']})"
        for c in ("security_id", "symbol", "kind", "announce_date", "effective_date"):
            if r[c] is None:
                problems.append(f"{where}: missing {c}")
        if r["kind"] not in KINDS:
            problems.append(f"{where}: kind must be one of {', '.join(KINDS)}")
        elif r["kind"] == "split" and not (r["ratio"] is not None and r["ratio"] > 0
                                          and r["ratio"] != 1):
            problems.append(f"{where}: ratio {r['ratio']} must be a positive number other "
                            "than 1 (2 for a 2:1 split, 0.1 for a 1:10 reverse split)")
        elif r["kind"] == "dividend" and not (r["amount"] is not None and r["amount"] > 0):
            problems.append(f"{where}: amount {r['amount']} must be a positive cash amount "
                            "per share")
        elif r["kind"] == "rename" and (not r["new_symbol"] or r["new_symbol"] == r["symbol"]):
            problems.append(f"{where}: new_symbol must name the symbol traded from "
                            "effective_date on, different from symbol")
        if (r["announce_date"] is not None and r["effective_date"] is not None
                and r["effective_date"] < r["announce_date"]):
            problems.append(f"{where}: effective_date {r['effective_date']} is before "
                            f"announce_date {r['announce_date']}; an action cannot take "
                            "effect before it is announced")
    return problems + _unknown_symbols(rows, listings)


def _unknown_symbols(actions: pl.DataFrame, listings: pl.DataFrame) -> list[str]:
    """Actions whose (security_id, symbol) no listing holds before their effective date."""
    if listings.is_empty():
        return []
    known = set(zip(listings["security_id"], listings["symbol"], strict=True))
    owners: dict[str, list[str]] = {}
    for sid, symbol in sorted(known):
        owners.setdefault(symbol, []).append(sid)
    symbols = sorted(owners)
    problems = []
    for r in actions.iter_rows(named=True):
        if (r["security_id"], r["symbol"]) in known:
            continue
        if r["symbol"] in owners:
            problems.append(f"corporate_actions row {r['row']}: symbol {r['symbol']!r} is "
                            f"listed as security {', '.join(map(repr, owners[r['symbol']]))}, "
                            f"not {r['security_id']!r}; use the listings' security_id")
            continue
        match = difflib.get_close_matches(str(r["symbol"]), symbols, n=1)
        hint = f"; did you mean {match[0]!r}?" if match else "; add it to the listings"
        problems.append(f"corporate_actions row {r['row']}: symbol {r['symbol']!r} of "
                        f"security {r['security_id']!r} is not in the listings{hint}")
    return problems


def check_reference(listings: pl.DataFrame, actions: pl.DataFrame, *, source: str = "") -> None:
    """Raise :class:`DataError` listing every problem of the two tables (none: return).

    Both must already have :data:`LISTINGS_SCHEMA` / :data:`ACTIONS_SCHEMA` (plus an
    optional ``row`` column numbering the source rows, used in the messages).
    """
    problems = _listing_problems(listings) + _action_problems(actions, listings)
    if problems:
        shown = "\n  ".join(problems[:_MAX_LISTED])
        extra = len(problems) - _MAX_LISTED
        more = f"\n  … and {extra} more" if extra > 0 else ""
        prefix = f"{source}: " if source else ""
        raise DataError(f"{prefix}reference data has {len(problems)} problem(s); fix them and "
                        f"import again:\n  {shown}{more}")


#: The bar columns that get a point-in-time adjusted twin ``adj_<column>``.
ADJUSTED_COLUMNS = ("open", "high", "low", "close", "volume")


def with_adjusted(bars: pl.DataFrame, actions: pl.DataFrame) -> pl.DataFrame:
    """``bars`` with ``adj_open … adj_volume`` (those of :data:`ADJUSTED_COLUMNS` it has):
    :func:`adjusted` without ``as_of``, what a job's strategy gets on reference data."""
    adj = adjusted(bars, actions)
    return bars.with_columns(adj.get_column(c).alias(f"adj_{c}") for c in ADJUSTED_COLUMNS
                             if c in bars.columns)


def adjusted(bars: pl.DataFrame, actions: pl.DataFrame,
             as_of: dt.date | dt.datetime | None = None, *, dividends: bool = True,
             tz: str = EXCHANGE_TZ) -> pl.DataFrame:
    """Split- (and dividend-) adjusted prices of ``bars`` that never use a later announcement.

    Without ``as_of`` (what a vectorized strategy should use) each bar is adjusted *as of
    its own time*: a bar dated on or after an action's effective day (and announcement) is
    scaled into the units of the shares before it, so the series is continuous, and a bar
    before the action is left as traded. Every prefix of the bars gives the same values,
    so the lookahead audit finds nothing to flag. Returns, ratios and moving-average
    crossovers equal those of a fully back-adjusted series; only the price level differs.

    With ``as_of`` (an event strategy passes ``ctx.now``) it is the back-adjusted series a
    data vendor would deliver at that time: prices before each action announced on or
    before ``as_of`` are multiplied by ``1/ratio`` (split) and ``1 − amount/last close before
    the ex-date`` (dividend). An action announced after ``as_of`` changes nothing.

    Volume moves the other way for splits (shares). ``dividends=False`` adjusts splits only.
    Returns ``bars`` with the same columns and row order.

    Examples
    --------
    >>> import polars as pl, datetime as dt
    >>> bars = pl.DataFrame({"ts": [dt.datetime(2024, 1, d, 15, tzinfo=dt.UTC) for d in (2, 3)],
    ...                      "symbol": ["A", "A"], "open": [100.0, 50.0], "close": [100.0, 50.0]})
    >>> split = pl.DataFrame({"security_id": ["A"], "symbol": ["A"], "kind": ["split"],
    ...     "announce_date": [dt.date(2024, 1, 2)], "effective_date": [dt.date(2024, 1, 3)],
    ...     "ratio": [2.0], "amount": [None], "new_symbol": [None]}, schema=ACTIONS_SCHEMA)
    >>> adjusted(bars, split)["close"].to_list()  # each bar as known at its own time
    [100.0, 100.0]
    >>> adjusted(bars, split, dt.date(2024, 1, 3))["close"].to_list()  # a vendor's, on the 3rd
    [50.0, 50.0]
    >>> adjusted(bars, split, dt.date(2024, 1, 1))["close"].to_list()  # not yet announced
    [100.0, 50.0]
    """
    kinds = ["split", "dividend"] if dividends else ["split"]
    known = actions.filter(pl.col("kind").is_in(kinds))
    if isinstance(as_of, dt.datetime):
        if as_of.tzinfo is None:
            raise ValueError("as_of must be timezone-aware, e.g. the bar's ts (UTC)")
        as_of = as_of.astimezone(ZoneInfo(tz)).date()
    if as_of is not None:
        # Through text: in the sandbox the simulated clock's date type is not a polars one.
        day = pl.lit(as_of.isoformat()).str.to_date()
        known = known.filter(pl.col("announce_date") <= day)
    if known.is_empty():
        return bars
    keyed = bars.with_row_index("_row").with_columns(
        pl.col("ts").dt.convert_time_zone(tz).dt.date().alias("_day"))
    factors = _factors(keyed, known)
    joined = _forward(keyed, factors) if as_of is None else _backward(keyed, factors)
    k, s = pl.col("_k").fill_null(1.0), pl.col("_s").fill_null(1.0)
    prices = [pl.col(c) * k for c in ("open", "high", "low", "close") if c in bars.columns]
    volume = [pl.col("volume") / s] if "volume" in bars.columns else []
    out = joined.with_columns(*prices, *volume).sort("_row")
    return out.select(bars.columns).cast(bars.schema)


def _backward(keyed: pl.DataFrame, factors: pl.DataFrame) -> pl.DataFrame:
    """Each bar times the factors of the actions effective after its day."""
    cum = (factors.sort("symbol", "effective_date", descending=[False, True])
           .with_columns(pl.col("price_factor").cum_prod().over("symbol").alias("_k"),
                         pl.col("split_factor").cum_prod().over("symbol").alias("_s"))
           .sort("symbol", "effective_date"))
    return keyed.sort("_day").join_asof(
        cum.select("symbol", pl.col("effective_date").alias("_day"), "_k", "_s"),
        on="_day", by="symbol", strategy="forward", allow_exact_matches=False,
        check_sortedness=False)  # sorted by _day above, as join_asof needs


def _forward(keyed: pl.DataFrame, factors: pl.DataFrame) -> pl.DataFrame:
    """Each bar divided by the factors of the actions known and effective by its day."""
    start = pl.max_horizontal("effective_date", "announce_date")
    cum = (factors.with_columns(start.alias("_start")).sort("symbol", "_start")
           .with_columns((1.0 / pl.col("price_factor")).cum_prod().over("symbol").alias("_k"),
                         (1.0 / pl.col("split_factor")).cum_prod().over("symbol").alias("_s")))
    return keyed.sort("_day").join_asof(
        cum.select("symbol", pl.col("_start").alias("_day"), "_k", "_s"),
        on="_day", by="symbol", strategy="backward", check_sortedness=False)


def _factors(keyed: pl.DataFrame, known: pl.DataFrame) -> pl.DataFrame:
    """``symbol, announce_date, effective_date, price_factor, split_factor`` of the actions:
    what a price before the action is multiplied by to be in the units after it."""
    split = pl.col("kind") == "split"
    base = known.select("symbol", "announce_date", "effective_date", "kind", "ratio", "amount")
    # A dividend's factor needs the last close before its ex-date, from the bars.
    last_close = (keyed.filter(pl.col("symbol").is_in(base["symbol"].unique().implode()))
                  .group_by("symbol", "_day").agg(pl.col("close").last())
                  .sort("_day"))
    with_close = base.sort("effective_date").join_asof(
        last_close.select("symbol", pl.col("_day").alias("effective_date"),
                          pl.col("close").alias("_prev")),
        on="effective_date", by="symbol", strategy="backward", allow_exact_matches=False,
        check_sortedness=False)
    return with_close.select(
        "symbol", "announce_date", "effective_date",
        pl.when(split).then(1.0 / pl.col("ratio"))
        .otherwise(1.0 - pl.col("amount") / pl.col("_prev")).fill_null(1.0)
        .alias("price_factor"),
        pl.when(split).then(1.0 / pl.col("ratio")).otherwise(1.0).alias("split_factor"))
