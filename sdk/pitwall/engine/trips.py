"""Round trips, per-symbol P&L attribution and the cost breakdown of a run's fills.

* **Round trips**: per symbol, in fill order, a trip opens when a fill leaves a flat
  position and closes when a fill brings it back to flat; a fill that flips the position
  closes one trip with the part that reaches flat and opens the next with the rest (FIFO:
  the oldest open quantity is closed first, so a trip's P&L is its cash flows). A position
  is flat when it is within 1e-9 of the quantities traded (fractional shares sum with
  rounding). A trip still open at the end is marked at its symbol's last close.
* **Attribution**: a symbol's P&L is its end value (shares × last close) less the
  notional bought plus the notional sold; ``net_pnl`` deducts its trade costs. The
  symbols' net P&L less borrow is the run's P&L (borrow is in the cash, not in a fill).
* **Costs**: per kind from the engine when its fills carry the kinds (event runs:
  ``commission``, ``slippage``), else from the spec's rates times each fill's notional
  and shares; ``impact`` is what the fills were charged beyond those; borrow is the
  accounting identity above.

Conventions: docs/engine-conventions.md §4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from pitwall.engine.metrics import _finite
from pitwall.engine.vectorized import EngineResult
from pitwall.models import (
    MAX_ATTRIBUTION,
    MAX_ROUND_TRIPS,
    CostBreakdown,
    Costs,
    RoundTrip,
    RoundTripSummary,
    SymbolAttribution,
)

#: A position within this fraction of the quantities around it is flat.
FLAT = 1e-9
_US_PER_HOUR = 3_600_000_000


@dataclass(frozen=True)
class Accounts:
    """What :func:`account` found in the fills."""

    costs: CostBreakdown
    round_trips: list[RoundTrip] = field(default_factory=list)
    n_round_trips: int = 0
    summary: RoundTripSummary = field(default_factory=RoundTripSummary)
    attribution: list[SymbolAttribution] = field(default_factory=list)
    attribution_rest: SymbolAttribution | None = None
    n_symbols_traded: int = 0
    borrow: float | None = None


def account(result: EngineResult, fills: pl.DataFrame | None, *, costs: Costs | None,
            bars: pl.DataFrame | None = None,
            positions: pl.DataFrame | None = None) -> Accounts:
    """Round trips, attribution and costs of ``fills`` (``ts, symbol, qty, price,
    notional, cost``), marked at the last close of each symbol (``bars``, else
    ``positions``, else the last fill price)."""
    if fills is None or fills.height == 0:
        return Accounts(costs=CostBreakdown(trade_costs=_finite(result.total_cost),
                                            traded_notional=0.0, borrow=None))
    fills = fills.with_row_index("_order").sort("symbol", "_order", maintain_order=True)
    marks = last_marks(fills, bars, positions)
    per_symbol = attribution(fills, marks)
    net = float(per_symbol.get_column("net_pnl").sum())
    borrow = net - (result.final_equity - result.capital)
    if abs(borrow) < 1e-9 * result.capital:
        borrow = 0.0  # rounding of the sums, not a charge
    trips = round_trips(fills, marks)
    rows, rest = _attribution_rows(per_symbol)
    return Accounts(
        costs=cost_breakdown(fills, costs, bars, borrow=borrow),
        round_trips=_trip_models(trips.head(MAX_ROUND_TRIPS)), n_round_trips=trips.height,
        summary=summarize(trips), attribution=rows, attribution_rest=rest,
        n_symbols_traded=per_symbol.height, borrow=borrow,
    )


def last_marks(fills: pl.DataFrame, bars: pl.DataFrame | None,
               positions: pl.DataFrame | None) -> pl.DataFrame:
    """``symbol, mark``: each traded symbol's last close (``bars``), else its last
    position price (``positions``), else its last fill price."""
    marks = fills.group_by("symbol").agg(mark=pl.col("price").last())
    for source, column in ((positions, "price"), (bars, "close")):
        if source is None:
            continue
        last = source.sort("ts").group_by("symbol").agg(better=pl.col(column).last())
        marks = marks.join(last, on="symbol", how="left").select(
            "symbol", mark=pl.coalesce("better", "mark"))
    return marks


def attribution(fills: pl.DataFrame, marks: pl.DataFrame) -> pl.DataFrame:
    """``symbol, pnl, cost, net_pnl, traded_notional, n_fills``, best net P&L first."""
    return (
        fills.group_by("symbol")
        .agg(qty=pl.col("qty").sum(), spent=pl.col("notional").sum(), cost=pl.col("cost").sum(),
             traded_notional=pl.col("notional").abs().sum(), n_fills=pl.len())
        .join(marks, on="symbol", how="left")
        .with_columns(pnl=pl.col("qty") * pl.col("mark") - pl.col("spent"))
        .with_columns(net_pnl=pl.col("pnl") - pl.col("cost"))
        .select("symbol", "pnl", "cost", "net_pnl", "traded_notional", "n_fills")
        .sort(["net_pnl", "symbol"], descending=[True, False])
    )


def _attribution_rows(frame: pl.DataFrame) -> tuple[list[SymbolAttribution],
                                                    SymbolAttribution | None]:
    """Every symbol, or the best and worst halves of MAX_ATTRIBUTION and the rest summed."""
    def rows(part: pl.DataFrame) -> list[SymbolAttribution]:
        return [SymbolAttribution(symbol=s, pnl=_finite(p), cost=_finite(c),
                                  net_pnl=_finite(n), traded_notional=_finite(t), n_fills=k)
                for s, p, c, n, t, k in part.iter_rows()]

    if frame.height <= MAX_ATTRIBUTION:
        return rows(frame), None
    half = MAX_ATTRIBUTION // 2
    middle = frame.slice(half, frame.height - 2 * half)
    rest = SymbolAttribution(
        symbol=f"{middle.height} other symbols",
        pnl=_finite(float(middle["pnl"].sum())), cost=_finite(float(middle["cost"].sum())),
        net_pnl=_finite(float(middle["net_pnl"].sum())),
        traded_notional=_finite(float(middle["traded_notional"].sum())),
        n_fills=int(middle["n_fills"].sum()))
    return rows(frame.head(half)) + rows(frame.tail(half)), rest


def round_trips(fills: pl.DataFrame, marks: pl.DataFrame) -> pl.DataFrame:
    """One row per round trip (module docstring), in the order they opened.

    ``fills`` sorted by symbol, then fill order. Columns: ``symbol, direction, opened,
    closed, n_fills, max_qty, entry_price, exit_price, pnl, cost, net_pnl, ret``.
    """
    sym = fills.get_column("symbol").to_numpy()
    qty = fills.get_column("qty").to_numpy()
    first = np.concatenate(([True], sym[1:] != sym[:-1]))
    q = fills.select(pl.col("qty").cum_sum().over("symbol")).to_series().to_numpy()
    q_prev = q - qty
    flat_after = np.abs(q) <= FLAT * np.maximum(np.abs(q_prev), np.abs(qty))
    flat_before = np.concatenate(([True], flat_after[:-1])) | first
    flip = ~flat_before & ~flat_after & (np.sign(q) != np.sign(q_prev))
    opens = (flat_before & ~flat_after) | flip
    trip = np.cumsum(opens) - 1
    # A fill from flat that stays flat belongs to no trip (it has no quantity to speak of).
    trip = np.where(flat_before & flat_after, -1, trip)
    # Contributions: every fill to its trip; a flip's closing part to the trip before.
    close_part = np.where(flip, np.abs(q_prev) / np.where(flip, np.abs(qty), 1.0), 0.0)
    idx = np.concatenate((np.flatnonzero(trip >= 0), np.flatnonzero(flip)))
    frac = np.concatenate((1.0 - close_part[trip >= 0], close_part[flip]))
    tid = np.concatenate((trip[trip >= 0], trip[flip] - 1))
    after = np.concatenate((np.abs(q[trip >= 0]), np.zeros(int(flip.sum()))))
    adds = np.concatenate(((np.abs(q) > np.abs(q_prev))[trip >= 0], np.zeros(int(flip.sum()),
                                                                             dtype=bool)))
    adds |= np.concatenate((flip[trip >= 0], np.zeros(int(flip.sum()), dtype=bool)))
    return _trips_frame(fills, marks, idx, frac, tid, after, adds, opens, q)


def _trips_frame(fills: pl.DataFrame, marks: pl.DataFrame, idx: np.ndarray[Any, Any],
                 frac: np.ndarray[Any, Any], tid: np.ndarray[Any, Any],
                 after: np.ndarray[Any, Any], adds: np.ndarray[Any, Any],
                 opens: np.ndarray[Any, Any], q: np.ndarray[Any, Any]) -> pl.DataFrame:
    """Aggregate the fills' contributions into one row per trip."""
    part = fills.select("ts", "symbol", "qty", "notional", "cost")[idx].with_columns(
        trip=pl.Series(tid), frac=pl.Series(frac), after=pl.Series(after),
        adds=pl.Series(adds))
    part = part.with_columns(n=pl.col("notional") * pl.col("frac"),
                             k=pl.col("qty").abs() * pl.col("frac"))
    grouped = part.group_by("trip").agg(
        symbol=pl.col("symbol").first(), opened=pl.col("ts").min(), last=pl.col("ts").max(),
        n_fills=pl.len(), max_qty=pl.col("after").max(), cash=-pl.col("n").sum(),
        cost=(pl.col("cost") * pl.col("frac")).sum(),
        end_qty=(pl.col("qty") * pl.col("frac")).sum(),
        entry_n=pl.col("n").abs().filter(pl.col("adds")).sum(),
        entry_k=pl.col("k").filter(pl.col("adds")).sum(),
        exit_n=pl.col("n").abs().filter(~pl.col("adds")).sum(),
        exit_k=pl.col("k").filter(~pl.col("adds")).sum(),
    )
    side = pl.DataFrame({"trip": np.arange(int(opens.sum())),
                         "long": q[opens] > 0}).with_columns(pl.col("trip").cast(pl.Int64))
    trips = grouped.with_columns(pl.col("trip").cast(pl.Int64)).join(side, on="trip")
    trips = trips.join(marks, on="symbol", how="left")
    is_open = pl.col("end_qty").abs() > FLAT * pl.col("max_qty")
    return trips.with_columns(
        direction=pl.when(pl.col("long")).then(pl.lit("long")).otherwise(pl.lit("short")),
        closed=pl.when(is_open).then(None).otherwise(pl.col("last")),
        pnl=pl.col("cash") + pl.when(is_open).then(pl.col("end_qty") * pl.col("mark"))
        .otherwise(0.0),
        entry_price=pl.col("entry_n") / pl.col("entry_k"),
        exit_price=pl.when(pl.col("exit_k") > 0).then(pl.col("exit_n") / pl.col("exit_k")),
    ).with_columns(net_pnl=pl.col("pnl") - pl.col("cost")).with_columns(
        ret=pl.when(pl.col("entry_n") > 0).then(pl.col("net_pnl") / pl.col("entry_n")),
    ).sort("opened", "symbol", "trip").select(
        "symbol", "direction", "opened", "closed", "n_fills", "max_qty", "entry_price",
        "exit_price", "pnl", "cost", "net_pnl", "ret")


def _trip_models(frame: pl.DataFrame) -> list[RoundTrip]:
    out = []
    for row in frame.iter_rows(named=True):
        out.append(RoundTrip(**{k: _finite(v) if isinstance(v, float) else v
                                for k, v in row.items()}))
    return out


def summarize(trips: pl.DataFrame) -> RoundTripSummary:
    """Counts of all trips; win rate, averages, extremes and hours held of the closed."""
    if trips.height == 0:
        return RoundTripSummary()
    closed = trips.filter(pl.col("closed").is_not_null())
    net = closed.get_column("net_pnl").to_numpy()
    wins, losses = net[net > 0], net[net < 0]
    hours = ((closed.get_column("closed") - closed.get_column("opened")).dt.total_microseconds()
             .to_numpy() / _US_PER_HOUR)
    some = len(net) > 0
    return RoundTripSummary(
        n=trips.height, n_closed=closed.height,
        n_long=int((trips.get_column("direction") == "long").sum()),
        n_short=int((trips.get_column("direction") == "short").sum()),
        win_rate=float(len(wins) / len(net)) if some else None,
        avg_net_pnl=_finite(float(net.mean())) if some else None,
        avg_win=_finite(float(wins.mean())) if len(wins) else None,
        avg_loss=_finite(float(losses.mean())) if len(losses) else None,
        best=_finite(float(net.max())) if some else None,
        worst=_finite(float(net.min())) if some else None,
        profit_factor=(_finite(float(wins.sum() / -losses.sum())) if len(losses) else None),
        avg_hours=_finite(float(hours.mean())) if some else None,
        net_pnl=_finite(float(trips.get_column("net_pnl").sum())),
    )


def cost_breakdown(fills: pl.DataFrame, costs: Costs | None, bars: pl.DataFrame | None, *,
                   borrow: float | None) -> CostBreakdown:
    """The fills' trade costs by kind (module docstring), and ``borrow`` as given."""
    notional = fills.get_column("notional").abs()
    total = float(fills.get_column("cost").sum())
    traded = float(notional.sum())
    source = {"borrow": "identity"}
    kinds: dict[str, float | None] = {"commission": None, "slippage": None, "spread": None}
    if {"commission", "slippage"} <= set(fills.columns):
        kinds["commission"] = float(fills.get_column("commission").sum())
        kinds["slippage"] = float(fills.get_column("slippage").sum())
        kinds["spread"] = float(fills.get_column("spread").sum()) if "spread" in fills.columns \
            else 0.0
        source.update(commission="engine", slippage="engine", spread="engine")
    elif costs is not None:
        shares = float(fills.get_column("qty").abs().sum())
        kinds["commission"] = costs.commission_bps / 1e4 * traded \
            + costs.commission_per_share * shares
        kinds["slippage"] = costs.slippage_bps / 1e4 * traded
        kinds["spread"] = _spread(fills, costs, bars)
        source.update(commission="rates", slippage="rates", spread="rates")
    impact = None
    if all(v is not None for v in kinds.values()):
        impact = total - sum(v for v in kinds.values() if v is not None)
        if abs(impact) < 1e-9 * max(total, 1.0):
            impact = 0.0  # rounding of the sums
        source["impact"] = "rest"
    return CostBreakdown(
        **{k: None if v is None else _finite(v) for k, v in kinds.items()},
        impact=None if impact is None else _finite(impact),
        borrow=None if borrow is None else _finite(borrow),
        trade_costs=_finite(total), traded_notional=_finite(traded), source=source)


def _spread(fills: pl.DataFrame, costs: Costs, bars: pl.DataFrame | None) -> float | None:
    """Half the spread on each fill: ``spread_bps/2`` (fixed) or half the fill bar's
    range over its open (range; None without the bars)."""
    if costs.spread_model == "fixed":
        return costs.spread_bps / 2e4 * float(fills.get_column("notional").abs().sum())
    if bars is None or not {"high", "low"} <= set(bars.columns):
        return None
    joined = fills.select("ts", "symbol", "notional", "price").join(
        bars.select("ts", "symbol", "high", "low"), on=["ts", "symbol"], how="left")
    half = 0.5 * (pl.col("high") - pl.col("low")) / pl.col("price") * pl.col("notional").abs()
    return float(joined.select(half.fill_null(0.0).sum()).item())
