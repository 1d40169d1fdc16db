"""Corporate actions in the trusted engine: splits, cash dividends, delistings, renames.

Bars are unadjusted (docs/reference-data.md), so a 2:1 split halves the open of its
effective day and an ex-dividend open drops by the dividend. The fill recursion only ever
uses ratios of prices of one symbol (``G(t) = open(t+1)/open(t)``, ``M(t) = close(t)/open(t)``,
docs/engine-conventions.md), so every action becomes a factor on the one gross return
that crosses its effective date, applied by scaling the symbol's earlier prices:

* split with ``ratio`` r (new shares per old): ``G' = r·G`` (shares × r, price / r);
* dividend of ``amount`` a: ``G' = (open(c) + a)/open(c−1)``, the holder receives ``a`` per
  share as cash at the ex-date open; a short pays it, by the sign of its weight;
* delisting: the position is sold at the next timestamp at the last close (a trade at the
  last price, with its costs), and the sale is reported;
* rename: the security's bars, weights and actions are keyed by its latest symbol, so a
  position carries across the symbol change.

The recursion runs on the adjusted prices; trades, positions and costs keep the raw ones
(a position after a split shows twice the shares at half the price). Knowing every
action here is not lookahead: a factor changes only the return across its own effective
date, when the market would pay it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import polars as pl

from pitwall.engine.fills import Path, Rate
from pitwall.engine.grid import BarGrid, FloatGrid
from pitwall.engine.ledger import Ledger, trade_weights
from pitwall.engine.liquidity import Liquidity
from pitwall.reference import ACTIONS_SCHEMA, LISTINGS_SCHEMA, exchange_day


@dataclass(frozen=True, eq=False)
class CorporateActions:
    """The reference data a run applies: ``pitwall.reference`` tables (listings optional).

    Only delistings need ``listings`` (their ``delisted`` flag); splits, dividends and
    renames come from ``actions``.
    """

    actions: pl.DataFrame
    listings: pl.DataFrame = dataclasses.field(
        default_factory=lambda: pl.DataFrame(schema=LISTINGS_SCHEMA))

    def __post_init__(self) -> None:
        for name, frame, schema in (("actions", self.actions, ACTIONS_SCHEMA),
                                    ("listings", self.listings, LISTINGS_SCHEMA)):
            missing = [c for c in schema.names() if c not in frame.columns]
            if missing:
                raise ValueError(f"corporate {name} lack column(s) {', '.join(missing)}; "
                                 "build them with the schemas of pitwall.reference")


@dataclass(frozen=True, eq=False)
class CorporateReport:
    """What the actions did to a run: counts, dividend cash and the delisted positions.

    ``delisted`` has ``symbol, last_ts, price, proceeds``: the symbol's last bar, its last
    close and the currency received (negative: paid to cover a short) when it was closed.
    """

    splits: int
    dividends: int
    dividend_cash: float
    renames: int
    delisted: pl.DataFrame

    def summary(self) -> dict[str, object]:
        """Plain numbers for a report or a manifest."""
        return {"splits": self.splits, "dividends": self.dividends,
                "dividend_cash": self.dividend_cash, "renames": self.renames,
                "delisted": self.delisted.get_column("symbol").to_list()}


def _renames(actions: pl.DataFrame) -> pl.DataFrame:
    """``symbol, until, key``: rows of ``symbol`` dated before ``until`` belong to ``key``,
    the latest symbol of the security."""
    renames = actions.filter(pl.col("kind") == "rename").sort("effective_date")
    final = renames.group_by("security_id").agg(pl.col("new_symbol").last().alias("key"))
    return renames.join(final, on="security_id").select(
        "security_id", "symbol", pl.col("effective_date").alias("until"), "key")


def latest_symbols(corporate: CorporateActions) -> dict[str, str]:
    """Every symbol a renamed security traded under before its last one, mapped to that
    last symbol (the key :func:`relabel` gives its rows)."""
    periods = _renames(corporate.actions)
    return dict(zip(periods["symbol"].to_list(), periods["key"].to_list(), strict=True))


def relabel(frame: pl.DataFrame, corporate: CorporateActions) -> pl.DataFrame:
    """``frame`` (bars or weights: ``ts, symbol, …``) keyed by each security's latest symbol.

    A row of an old symbol dated before the rename's effective day, or of an intermediate
    symbol, takes the security's last symbol; everything else is returned unchanged.
    """
    periods = _renames(corporate.actions)
    if periods.is_empty():
        return frame
    # Every symbol the security traded under before its last one, with the day it ended.
    keyed = frame.with_row_index("_row").with_columns(exchange_day(pl.col("ts")).alias("_day"))
    hits = (keyed.select("_row", "symbol", "_day")
            .join(periods.select("symbol", "until", "key"), on="symbol")
            .filter(pl.col("_day") < pl.col("until"))
            .group_by("_row").agg(pl.col("key").first()))
    if hits.is_empty():
        return frame
    out = (keyed.join(hits, on="_row", how="left")
           .with_columns(pl.coalesce("key", "symbol").alias("symbol"))
           .select(frame.columns))
    return out.sort("symbol", "ts")


def relabel_actions(corporate: CorporateActions) -> CorporateActions:
    """The actions and listings with every symbol replaced by its security's latest one."""
    periods = _renames(corporate.actions)
    if periods.is_empty():
        return corporate
    key = periods.group_by("security_id").agg(pl.col("key").first())

    def keyed(frame: pl.DataFrame) -> pl.DataFrame:
        # A rename keeps its own symbols: relabel() reads them to find the old rows.
        rename = pl.col("kind") == "rename" if "kind" in frame.columns else pl.lit(False)
        return (frame.join(key, on="security_id", how="left")
                .with_columns(pl.when(rename).then(pl.col("symbol"))
                              .otherwise(pl.coalesce("key", "symbol")).alias("symbol"))
                .select(frame.columns))

    return CorporateActions(keyed(corporate.actions), keyed(corporate.listings))


@dataclass(frozen=True, eq=False)
class _Event:
    row: int
    col: int  # first column with a bar on or after the effective day
    kind: str
    value: float  # ratio of a split, amount of a dividend


@dataclass(frozen=True, eq=False)
class CorporatePlan:
    """The actions laid on one grid: the adjusted grid the recursion runs on, and events."""

    raw: BarGrid
    grid: BarGrid
    events: tuple[_Event, ...]
    delist: tuple[tuple[int, int], ...]  # (row, last column with a bar)
    renames: int

    def close_delisted(self, target: FloatGrid) -> FloatGrid:
        """Targets with every delisted symbol sold at the timestamp after its last bar."""
        if not self.delist:
            return target
        out = target.copy()
        for row, last in self.delist:
            out[row, last:] = 0.0
        return out

    def liquidity(self, inputs: Liquidity) -> Liquidity:
        """The fill model's inputs for the adjusted recursion: shares counted at the raw
        opens (lots, the participation cap and the minimum see real shares against real
        volume) and each delisted position's sale forced through whatever the rules say
        (infinite volume on its settlement bar)."""
        volume = inputs.volume.copy()
        for row, last in self.delist:
            volume[row, last + 1] = np.inf
        return dataclasses.replace(inputs, volume=volume, share_price=np.where(
            self.raw.present, self.raw.open, np.nan))

    def with_trades(self, path: Path, executed: FloatGrid, rate: Rate) -> Path:
        """``path`` with its trades computed on the adjusted prices (the ledger's raw
        prices would see a split as a trade)."""
        if path.trades is not None:
            return path
        ledger = Ledger(grid=self.grid, executed=executed, path=path, rate=rate, capital=1.0)
        return dataclasses.replace(path, trades=trade_weights(ledger))

    def report(self, path: Path, capital: float) -> CorporateReport:
        """Count what happened and the cash it moved (``path`` from :meth:`with_trades`)."""
        held = path.held
        cash = 0.0
        for e in self.events:
            if e.kind == "dividend" and held is not None and e.col >= 2:
                # Shares held into the ex-date: the weight's value at the last open / price.
                value = held[e.row, e.col - 2] * path.post[e.col - 1]
                cash += capital * value / self.raw.open[e.row, e.col - 1] * e.value
        rows = []
        for row, last in self.delist:
            proceeds = 0.0
            if path.trades is not None:
                proceeds = -capital * float(path.trades[row, last] * path.pre[last + 1])
            rows.append((self.raw.symbols[row], int(self.raw.ts[last]),
                         float(self.raw.close[row, last]), proceeds))
        delisted = pl.DataFrame(rows, schema={"symbol": pl.String, "last_ts": pl.Int64,
                                              "price": pl.Float64, "proceeds": pl.Float64},
                                orient="row").with_columns(
            pl.col("last_ts").cast(pl.Datetime("us", "UTC")))
        return CorporateReport(
            splits=sum(e.kind == "split" for e in self.events),
            dividends=sum(e.kind == "dividend" for e in self.events),
            dividend_cash=cash, renames=self.renames, delisted=delisted)


def plan(grid: BarGrid, corporate: CorporateActions) -> CorporatePlan:
    """Lay ``corporate`` (already :func:`relabel_actions`-ed) on ``grid``.

    Vectorized over actions: a decade of minutes with every dividend of a large universe
    costs a few passes over the grid, not one per action.
    """
    days = (pl.Series(grid.ts).cast(pl.Datetime("us", "UTC")).to_frame("ts")
            .select(exchange_day(pl.col("ts"))).to_series().to_numpy())
    index = {s: i for i, s in enumerate(grid.symbols)}
    actions = corporate.actions.filter(pl.col("kind").is_in(["split", "dividend"]),
                                       pl.col("symbol").is_in(list(grid.symbols)))
    rows = np.array([index[s] for s in actions["symbol"]], dtype=np.int64)
    starts = np.searchsorted(days, actions["effective_date"].to_numpy(), side="left")
    t = grid.shape[1]
    # The first column with a bar at or after each column (t where none is left).
    cols = np.where(grid.present, np.arange(t)[None, :], t)
    following = np.minimum.accumulate(cols[:, ::-1], axis=1)[:, ::-1]
    first = following[:, 0]
    col = following[rows, np.minimum(starts, t - 1)] if rows.size else rows
    col = np.where(starts >= t, t, col)
    # Effective before the symbol's first bar (data already post-action) or after the last.
    keep = (col < t) & (col > first[rows]) if rows.size else rows.astype(bool)
    kinds = actions["kind"].to_numpy()[keep]
    values = np.where(kinds == "split", actions["ratio"].to_numpy()[keep],
                      actions["amount"].to_numpy()[keep]).astype(np.float64)
    events = tuple(_Event(int(r), int(c), str(k), float(v)) for r, c, k, v in
                   zip(rows[keep], col[keep], kinds, values, strict=True))
    delist = _delistings(grid, corporate.listings, index, days)
    return CorporatePlan(raw=grid, grid=_settled(_adjusted(grid, events), delist),
                         events=events, delist=delist,
                         renames=int((corporate.actions["kind"] == "rename").sum()))


def _adjusted(grid: BarGrid, events: tuple[_Event, ...]) -> BarGrid:
    """The grid with each symbol's prices before an action scaled by ``1/factor``."""
    if not events:
        return grid
    n, t = grid.shape
    factor = np.ones((n, t + 1))  # factor[i, c]: applies to the return into column c
    rows = np.array([e.row for e in events])
    cols = np.array([e.col for e in events])
    ratio = np.array([e.value if e.kind == "split" else 1.0 + e.value / grid.open[e.row, e.col]
                      for e in events])
    np.multiply.at(factor, (rows, cols), ratio)
    # scale[:, c] = 1 / (product of the factors of the columns after c)
    after = np.cumprod(factor[:, :0:-1], axis=1)[:, ::-1]
    scale = 1.0 / after
    return dataclasses.replace(grid, open=grid.open * scale, close=grid.close * scale)


def _delistings(grid: BarGrid, listings: pl.DataFrame, index: dict[str, int],
                days: np.ndarray) -> tuple[tuple[int, int], ...]:
    """(row, last bar column) of symbols delisted before the grid's last timestamp."""
    out = []
    for symbol in listings.filter(pl.col("delisted"))["symbol"]:
        row = index.get(symbol)
        if row is None:
            continue
        cols = np.flatnonzero(grid.present[row])
        last = int(cols[-1]) if cols.size else -1
        if 0 <= last < grid.shape[1] - 1 and days[last] < days[-1]:
            out.append((row, last))
    return tuple(out)


def _settled(grid: BarGrid, delist: tuple[tuple[int, int], ...]) -> BarGrid:
    """The grid with a bar (at the last close, as the grid fills it) just after each
    delisted symbol's last bar, where the engine sells what is left."""
    if not delist:
        return grid
    present = grid.present.copy()
    for row, last in delist:
        present[row, last + 1] = True
    return dataclasses.replace(grid, present=present)
