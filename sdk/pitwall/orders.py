"""Orders and fills of the event-driven engine, as plain records.

The same record layouts travel through the lock-step channel (``pitwall.lockstep``)
and feed the trusted broker, so they are NumPy structured dtypes with fixed
little-endian fields: an order is ``(id, symbol index, type, signed quantity, limit,
stop)``, a fill ``(order id, symbol index, signed quantity, price, commission,
remaining)``. ``NaN`` marks an absent limit or stop price.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

ORDER_DTYPE = np.dtype([("id", "<i8"), ("symbol", "<i4"), ("type", "u1"), ("qty", "<f8"),
                        ("limit", "<f8"), ("stop", "<f8")])
FILL_DTYPE = np.dtype([("id", "<i8"), ("symbol", "<i4"), ("qty", "<f8"), ("price", "<f8"),
                       ("commission", "<f8"), ("remaining", "<f8")])
#: Ids of orders the broker cancelled on the strategy's request.
CANCEL_DTYPE = np.dtype("<i8")

#: Bounds on what one step of a strategy may send (checked on the trusted side).
MAX_QUANTITY = 1e12
MAX_PRICE = 1e12

OrderTuple = tuple[int, int, int, float, float, float]
FillTuple = tuple[int, int, float, float, float, float]


class OrderType(IntEnum):
    """How an order executes; see :mod:`pitwall.engine.broker` for the fill rules."""

    MARKET = 0
    LIMIT = 1
    STOP = 2
    STOP_LIMIT = 3

    @classmethod
    def of(cls, limit: float | None, stop: float | None) -> OrderType:
        """The type implied by which prices are given."""
        if limit is None:
            return cls.MARKET if stop is None else cls.STOP
        return cls.LIMIT if stop is None else cls.STOP_LIMIT


@dataclass
class Order:
    """An order as the strategy sees it; ``remaining`` shrinks as it fills."""

    id: int
    symbol: str
    type: OrderType
    quantity: float
    limit: float | None
    stop: float | None
    remaining: float

    @property
    def is_buy(self) -> bool:
        return self.quantity > 0


@dataclass(frozen=True)
class Fill:
    """One execution: ``quantity`` is signed (buy > 0), ``price`` includes slippage."""

    order_id: int
    symbol: str
    quantity: float
    price: float
    commission: float
    remaining: float
    ts: dt.datetime


def price_or_nan(value: float | None) -> float:
    """A limit/stop price for the wire: ``NaN`` when absent."""
    return math.nan if value is None else float(value)
