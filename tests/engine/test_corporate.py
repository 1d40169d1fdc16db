"""Corporate actions in the engine, against hand arithmetic (docs/reference-data.md).

One bar per day at 15:00 UTC (10:00 in New York); capital 1,000; no costs unless said.
A weight set at the close of day 1 is traded at the open of day 2.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from corporate_kit import CAPITAL, DAYS, action, corporate, ts

from pitwall.engine import run_vectorized
from pitwall.engine.vectorized import EngineResult
from pitwall.models import Costs, Execution


def bars(rows: dict[str, list[tuple[int, float, float]]]) -> pl.DataFrame:
    """``{symbol: [(day, open, close), …]}`` as a bars frame sorted by (symbol, ts)."""
    out = [(ts(day), symbol, o, c) for symbol, days in rows.items() for day, o, c in days]
    return pl.DataFrame(out, schema={"ts": pl.Datetime("us", "UTC"), "symbol": pl.String,
                                     "open": pl.Float64, "close": pl.Float64},
                        orient="row").sort("symbol", "ts")


def weights(rows: list[tuple[int, str, float]]) -> pl.DataFrame:
    return pl.DataFrame([(ts(d), s, w) for d, s, w in rows],
                        schema={"ts": pl.Datetime("us", "UTC"), "symbol": pl.String,
                                "weight": pl.Float64}, orient="row").sort("symbol", "ts")


def equity(result: EngineResult) -> list[float]:
    return [round(x, 9) for x in result.equity["equity"]]


# A 2:1 split effective on day 3: the open halves, the holding doubles in shares.
SPLIT_BARS = bars({"A": [(1, 100, 100), (2, 100, 110), (3, 55, 60), (4, 60, 66)]})


def test_a_split_doubles_the_shares_and_keeps_the_value() -> None:
    w = weights([(1, "A", 1.0)])
    result = run_vectorized(SPLIT_BARS, w, capital=CAPITAL, costs=Costs(),
                            corporate=corporate(action("A", "split", 3, ratio=2.0)))
    # 10 shares at 100; 20 shares at 60 and 66 after the split.
    assert equity(result) == [1000.0, 1100.0, 1200.0, 1320.0]
    assert result.positions()["qty"].round(9).to_list() == [10.0, 20.0, 20.0]
    assert result.trades().height == 1  # the split is not a trade
    assert result.corporate is not None and result.corporate.splits == 1
    # Unadjusted bars used as given lose half the position at the split.
    naive = run_vectorized(SPLIT_BARS, w, capital=CAPITAL, costs=Costs())
    assert equity(naive)[2] == 600.0


def test_a_short_across_a_split_owes_twice_the_shares() -> None:
    w = weights([(1, "A", -1.0)])
    result = run_vectorized(SPLIT_BARS, w, capital=CAPITAL, costs=Costs(),
                            corporate=corporate(action("A", "split", 3, ratio=2.0)))
    # Short 10 at 100: 1000 + 10·(100 − 110) = 900 at day 2's close. The split leaves the
    # short at −20·55 = −1100 of 900 at day 3's open; constant mix covers back to −100%,
    # −900/55 shares, which lose 5 each by the close, then 10% of the equity on day 4.
    day3 = 900 - 900 / 55 * 5
    assert equity(result) == [1000.0, 900.0, round(day3, 9), round(day3 * 0.9, 9)]
    qty = result.positions()["qty"].to_list()
    assert qty[0] == pytest.approx(-10.0) and qty[1] == pytest.approx(-900 / 55)
    # Without the split the short would book a 45% gain at day 3's open.
    naive = run_vectorized(SPLIT_BARS, w, capital=CAPITAL, costs=Costs())
    assert equity(naive)[2] > 1200


def test_a_reverse_split_divides_the_shares() -> None:
    data = bars({"A": [(1, 2, 2), (2, 2, 2.5), (3, 25, 30), (4, 30, 30)]})
    result = run_vectorized(data, weights([(1, "A", 1.0)]), capital=CAPITAL, costs=Costs(),
                            corporate=corporate(action("A", "split", 3, ratio=0.1)))
    # 500 shares at 2 → 50 shares at 25 (1:10): 1250, then 50·30 = 1500.
    assert equity(result) == [1000.0, 1250.0, 1500.0, 1500.0]


# An ex-dividend day 3 paying 2.00 a share; the open is 99, not 100 − 2.
DIV_BARS = bars({"A": [(1, 100, 100), (2, 100, 100), (3, 99, 99), (4, 99, 99)]})


@pytest.mark.parametrize(("weight", "at_ex", "cash"), [
    (1.0, 10 * 99 + 20.0, 20.0),  # long 10 shares: 990 of stock and 20 of cash
    (-1.0, 2000 - 10 * 99 - 20.0, -20.0),  # short 10: cash 2000 − 990 to cover − 20 paid
])
def test_a_dividend_is_paid_in_cash_and_a_short_pays_it(weight: float, at_ex: float,
                                                         cash: float) -> None:
    result = run_vectorized(DIV_BARS, weights([(1, "A", weight)]), capital=CAPITAL,
                            costs=Costs(), corporate=corporate(action("A", "dividend", 3,
                                                                      amount=2.0)))
    assert equity(result)[:3] == [1000.0, 1000.0, round(at_ex, 9)]
    assert result.corporate is not None
    assert result.corporate.dividends == 1
    assert result.corporate.dividend_cash == pytest.approx(cash, abs=1e-9)
    naive = run_vectorized(DIV_BARS, weights([(1, "A", weight)]), capital=CAPITAL,
                           costs=Costs())
    assert equity(naive)[2] == round(1000.0 + weight * (99 - 100) * 10, 9)


# A delists after day 3 (last close 90); B trades on, flat.
DELIST_BARS = bars({"A": [(1, 100, 100), (2, 100, 100), (3, 100, 90)],
                    "B": [(d, 50, 50) for d in range(1, 6)]})
DELISTED = [("id-A", "A", 1, 3, True), ("id-B", "B", 1, 5, False)]


def test_a_delisted_position_is_sold_at_its_last_price_and_reported() -> None:
    w = weights([(1, "A", 0.5), (1, "B", 0.5)])
    result = run_vectorized(DELIST_BARS, w, capital=CAPITAL, costs=Costs(commission_bps=10.0),
                            corporate=corporate(listings=DELISTED))
    trades = result.trades().filter(pl.col("symbol") == "A")
    # Bought 500/100 = 4.995 shares net of cost on day 2; sold all at 90 on day 4.
    sale = trades.row(1, named=True)
    assert sale["ts"] == ts(4) and sale["price"] == 90.0
    assert sale["qty"] == pytest.approx(-trades["qty"][0], rel=1e-12)
    report = result.corporate
    assert report is not None
    assert report.delisted["symbol"].to_list() == ["A"]
    assert report.delisted["last_ts"].to_list() == [ts(3)]
    assert report.delisted["price"].to_list() == [90.0]
    assert report.delisted["proceeds"][0] == pytest.approx(sale["qty"] * -90.0, rel=1e-12)
    # After the sale only B is held.
    held = result.positions().filter(pl.col("ts") >= ts(4))
    assert held["symbol"].unique().to_list() == ["B"]
    assert result.equity["gross_exposure"][-1] == pytest.approx(0.5, rel=1e-12)


def test_delisting_without_costs_keeps_the_last_value() -> None:
    w = weights([(1, "A", 0.5), (1, "B", 0.5)])
    result = run_vectorized(DELIST_BARS, w, capital=CAPITAL, costs=Costs(),
                            corporate=corporate(listings=DELISTED))
    # 5 shares of A at 90 = 450 plus 500 of B; the sale at 90 changes no value.
    assert equity(result) == [1000.0, 1000.0, 950.0, 950.0, 950.0]
    assert result.corporate is not None
    assert result.corporate.delisted["proceeds"][0] == pytest.approx(450.0, rel=1e-12)
    naive = run_vectorized(DELIST_BARS, w, capital=CAPITAL, costs=Costs())
    assert naive.equity["gross_exposure"][-1] > 0.9  # the dead position counted as held


# OLD becomes NEW on day 3: the same security under another ticker.
RENAME_BARS = bars({"OLD": [(1, 100, 100), (2, 100, 110)],
                    "NEW": [(3, 110, 121), (4, 121, 121)]})


def test_a_renamed_position_carries_over() -> None:
    w = weights([(1, "OLD", 1.0)])
    result = run_vectorized(RENAME_BARS, w, capital=CAPITAL, costs=Costs(),
                            corporate=corporate(action("OLD", "rename", 3, new_symbol="NEW")))
    assert equity(result) == [1000.0, 1100.0, 1210.0, 1210.0]
    assert result.corporate is not None and result.corporate.renames == 1
    # One security, reported under its latest symbol, bought once.
    assert result.trades()["symbol"].to_list() == ["NEW"]
    naive = run_vectorized(RENAME_BARS, w, capital=CAPITAL, costs=Costs())
    assert equity(naive)[2] == 1100.0  # the old ticker frozen, the new one never bought


def test_a_split_before_the_first_bar_changes_nothing() -> None:
    w = weights([(1, "A", 1.0)])
    early = action("A", "split", 1, ratio=2.0)
    early["effective_date"] = DAYS[0] - dt.timedelta(days=3)
    result = run_vectorized(SPLIT_BARS, w, capital=CAPITAL, costs=Costs(),
                            corporate=corporate(early))
    assert result.corporate is not None and result.corporate.splits == 0
    assert equity(result) == equity(run_vectorized(SPLIT_BARS, w, capital=CAPITAL,
                                                   costs=Costs()))


def test_the_sequential_pass_applies_the_split_too() -> None:
    # A rebalance threshold runs the bar-by-bar pass (engine/threshold.py) on the same
    # adjusted prices: a split is neither a loss nor a trade there either.
    result = run_vectorized(SPLIT_BARS, weights([(1, "A", 1.0)]), capital=CAPITAL,
                            costs=Costs(), execution=Execution(rebalance_threshold=0.05),
                            corporate=corporate(action("A", "split", 3, ratio=2.0)))
    assert equity(result) == [1000.0, 1100.0, 1200.0, 1320.0]
    assert result.trades().height == 1


def test_the_fill_model_counts_real_shares_against_real_volume_across_a_split() -> None:
    # 15 shares trade per bar. Before the 2:1 split the recursion runs on halved prices
    # (50 for 100): sized at those, the 10 shares bought on day 2 would read as 20 and
    # the cap would cut them to 7.5 real shares. The fill model sizes at the raw open.
    data = SPLIT_BARS.with_columns(volume=pl.lit(15.0), high=pl.col("open") * 1.01,
                                   low=pl.col("open") * 0.99)
    capped = Execution(participation=1.0, lot_size=1.0)
    result = run_vectorized(data, weights([(1, "A", 1.0)]), capital=CAPITAL, costs=Costs(),
                            execution=capped,
                            corporate=corporate(action("A", "split", 3, ratio=2.0)))
    assert equity(result) == [1000.0, 1100.0, 1200.0, 1320.0]
    assert result.liquidity is not None and result.liquidity.capped_fills == 0
    assert result.trades()["qty"].to_list() == [10.0]
    # With 8 shares a bar the cap binds, in real shares: 8 on day 2 (cash 200 left); on
    # day 3 the 16 new shares are worth 880 and the rest of the target, 200 at 55, is
    # 3 whole new shares.
    tight = run_vectorized(data.with_columns(volume=pl.lit(8.0)), weights([(1, "A", 1.0)]),
                           capital=CAPITAL, costs=Costs(), execution=capped,
                           corporate=corporate(action("A", "split", 3, ratio=2.0)))
    assert tight.trades()["qty"].to_list() == [8.0, 3.0]


def test_a_delisted_position_is_sold_whatever_the_fill_model_says() -> None:
    # No bar follows the last one, so no volume: a participation cap, lots or a minimum
    # must not keep the dead position on the books.
    w = weights([(1, "A", 0.5), (1, "B", 0.5)])
    data = DELIST_BARS.with_columns(volume=pl.lit(1e6), high=pl.col("open") * 1.01,
                                    low=pl.col("open") * 0.99)
    result = run_vectorized(data, w, capital=CAPITAL, costs=Costs(),
                            execution=Execution(participation=0.1, lot_size=1.0),
                            corporate=corporate(listings=DELISTED))
    report = result.corporate
    assert report is not None and report.delisted["proceeds"][0] == pytest.approx(450.0)
    held = result.positions().filter(pl.col("ts") >= ts(4))
    assert held["symbol"].unique().to_list() == ["B"]
    # A minimum notional of 460 lets the purchases of 500 through, and would stop the
    # sale of the 450 left: the sale goes through all the same.
    floor = run_vectorized(data, w, capital=CAPITAL, costs=Costs(),
                           execution=Execution(lot_size=1.0, min_trade_notional=460.0),
                           corporate=corporate(listings=DELISTED))
    sale = floor.trades().filter(pl.col("symbol") == "A", pl.col("qty") < 0)
    assert sale.select("ts", "qty", "price").row(0) == (ts(4), -5.0, 90.0)
    held = floor.positions().filter(pl.col("ts") >= ts(4))
    assert held["symbol"].unique().to_list() == ["B"]
