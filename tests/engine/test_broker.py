"""The trusted broker, order type by order type, with hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pitwall.engine.broker import Broker, BrokerCosts
from pitwall.errors import StrategyOutputError
from pitwall.orders import OrderType

NAN = math.nan
M, L, S, SL = (int(t) for t in OrderType)


def bar(o: float, h: float, lo: float, c: float, v: float = 1e9) -> np.ndarray:
    return np.array([[o], [h], [lo], [c], [v]])


def order(oid: int, otype: int, qty: float, limit: float = NAN, stop: float = NAN,
          ) -> tuple[int, int, int, float, float, float]:
    return (oid, 0, otype, qty, limit, stop)


def fill_price(otype: int, qty: float, b: np.ndarray, *, limit: float = NAN,
               stop: float = NAN, slippage_bps: float = 0.0) -> float | None:
    broker = Broker(1, capital=1e6, costs=BrokerCosts(slippage_bps=slippage_bps),
                    max_participation=None)
    broker.submit([order(1, otype, qty, limit, stop)], [])
    fills = broker.execute(0, b)
    return fills[0][3] if fills else None


def test_market_fills_at_the_open_plus_slippage_and_pays_commissions() -> None:
    broker = Broker(1, capital=10_000.0, costs=BrokerCosts(commission_bps=10,
                    commission_per_share=0.01, slippage_bps=20), max_participation=None)
    broker.submit([order(1, M, 10.0)], [])
    (fill,) = broker.execute(0, bar(100, 105, 95, 102))
    # price 100 × 1.002 = 100.2; commission 10 × 100.2 × 0.001 + 10 × 0.01 = 1.102
    assert fill == pytest.approx((1, 0, 10.0, 100.2, 1.102, 0.0))
    assert broker.cash == pytest.approx(10_000 - 1002 - 1.102)
    assert broker.equity(np.array([102.0])) == pytest.approx(10_000 - 1002 - 1.102 + 1020)
    broker.submit([order(2, M, -10.0)], [])
    (sell,) = broker.execute(1, bar(110, 111, 109, 110))
    assert sell[3] == pytest.approx(110 * 0.998)  # a sell gets the open minus slippage
    assert broker.positions[0] == 0.0
    assert broker.open == {}


@pytest.mark.parametrize(("qty", "b", "limit", "expected"), [
    (5, bar(100, 101, 98, 99), 99.0, 99.0),     # buy: traded through inside the bar
    (5, bar(97, 99, 96, 98), 99.0, 97.0),       # buy: gap below the limit, better price
    (5, bar(100, 102, 99.5, 101), 99.0, None),  # buy: never reached
    (-5, bar(100, 103, 99, 101), 102.0, 102.0),  # sell: reached inside the bar
    (-5, bar(104, 105, 103, 104), 102.0, 104.0),  # sell: gap above the limit
    (-5, bar(100, 101.5, 99, 100), 102.0, None),
])
def test_limit(qty: float, b: np.ndarray, limit: float, expected: float | None) -> None:
    # Slippage never applies to a limit fill.
    assert fill_price(L, qty, b, limit=limit, slippage_bps=50) == expected


@pytest.mark.parametrize(("qty", "b", "stop", "expected"), [
    (5, bar(100, 106, 99, 105), 105.0, 105.0 * 1.01),   # buy stop touched inside the bar
    (5, bar(108, 110, 107, 109), 105.0, 108.0 * 1.01),  # gapped through: fills at the open
    (5, bar(100, 104, 99, 103), 105.0, None),
    (-5, bar(100, 101, 94, 95), 95.0, 95.0 * 0.99),     # sell stop (stop-loss)
    (-5, bar(90, 92, 88, 91), 95.0, 90.0 * 0.99),       # gap down through the stop-loss
])
def test_stop_with_gaps(qty: float, b: np.ndarray, stop: float, expected: float | None) -> None:
    got = fill_price(S, qty, b, stop=stop, slippage_bps=100)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_stop_limit() -> None:
    # Triggered inside the bar at 105, within the limit 106: fills at the stop, no slippage.
    assert fill_price(SL, 5, bar(100, 107, 99, 106), stop=105, limit=106) == 105.0
    # Gap through the stop at 108, limit 106: a limit on the same bar; low 105 reaches it.
    assert fill_price(SL, 5, bar(108, 109, 105, 107), stop=105, limit=106) == 106.0
    # Gap through the stop at 104 with limit 106: the open is within the limit.
    assert fill_price(SL, 5, bar(104.5, 109, 104, 107), stop=104, limit=106) == 104.5
    # Not triggered.
    assert fill_price(SL, 5, bar(100, 104, 99, 103), stop=105, limit=106) is None


def test_stop_limit_triggered_above_its_limit_rests_as_a_limit() -> None:
    broker = Broker(1, capital=1e6, max_participation=None)
    broker.submit([order(1, SL, 5, limit=104.0, stop=105.0)], [])
    assert broker.execute(0, bar(100, 106, 99, 105.5)) == []  # triggered, limit not proven
    assert broker.open[1].triggered
    (fill,) = broker.execute(1, bar(105, 105.5, 103.5, 104))  # now a plain limit at 104
    assert fill[3] == 104.0


def test_volume_cap_partial_fills_and_the_remainder_stays_open() -> None:
    broker = Broker(1, capital=1e6, max_participation=0.1)
    broker.submit([order(1, M, 250.0), order(2, L, 50.0, limit=200.0)], [])
    fills = broker.execute(0, bar(100, 101, 99, 100, v=1000))  # room: floor(0.1 × 1000) = 100
    assert [(f[0], f[2], f[5]) for f in fills] == [(1, 100.0, 150.0)]  # order 2 got no room
    fills = broker.execute(1, bar(101, 102, 100, 101, v=1999))  # room 199
    assert [(f[0], f[2], f[3], f[5]) for f in fills] == [(1, 150.0, 101.0, 0.0),
                                                         (2, 49.0, 101.0, 1.0)]
    assert list(broker.open) == [2]
    assert broker.positions[0] == 299.0
    assert broker.cash == pytest.approx(1e6 - 100 * 100 - 199 * 101)


def test_a_symbol_without_a_bar_fills_nothing_and_cancel_removes_the_order() -> None:
    broker = Broker(1, capital=1e6, max_participation=None)
    broker.submit([order(1, M, 1.0)], [])
    assert broker.execute(0, bar(NAN, NAN, NAN, NAN, NAN)) == []
    assert broker.submit([], [1, 99]) == [1]  # 99 is unknown: ignored
    assert broker.execute(1, bar(100, 100, 100, 100)) == []


@pytest.mark.parametrize("bad", [
    (1, 5, M, 1.0, NAN, NAN),          # symbol outside the universe
    (1, 0, 9, 1.0, NAN, NAN),          # unknown type
    (1, 0, M, NAN, NAN, NAN),          # NaN quantity
    (1, 0, M, 0.0, NAN, NAN),          # zero quantity
    (1, 0, M, 1e13, NAN, NAN),         # absurd quantity
    (1, 0, L, 1.0, NAN, NAN),          # limit without a price
    (1, 0, S, 1.0, NAN, -3.0),         # negative stop
    (0, 0, M, 1.0, NAN, NAN),          # id not above the last one
])
def test_untrusted_orders_are_refused(bad: tuple[int, int, int, float, float, float]) -> None:
    broker = Broker(1, capital=1e6)
    with pytest.raises(StrategyOutputError):
        broker.submit([bad], [])
    assert broker.open == {}
