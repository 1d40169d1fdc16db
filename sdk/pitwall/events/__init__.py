"""Event-driven strategies: bar-by-bar callbacks, orders and fills.

Write a :class:`Strategy` subclass; run it locally with :func:`run_local` or officially
with ``pitwall run --engine event`` (the strategy in a gVisor sandbox, bars fed in
lock-step, the broker trusted outside). Fill rules: :mod:`pitwall.events.broker`.

The trusted parts (broker, market, results, local runs) are imported lazily: the
sandboxed runner imports this package and should not pay for the engine and Plotly.
"""

from __future__ import annotations

import importlib
from typing import Any

from pitwall.events.context import Context, Portfolio
from pitwall.events.orders import Fill, Order, OrderType
from pitwall.events.strategy import Strategy

_LAZY = {"Broker": "broker", "BrokerCosts": "broker", "EventResult": "result",
         "Market": "market", "run_local": "local"}

__all__ = ["Broker", "BrokerCosts", "Context", "EventResult", "Fill", "Market", "Order",
           "OrderType", "Portfolio", "Strategy", "run_local"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pitwall.events' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pitwall.events.{module}"), name)
