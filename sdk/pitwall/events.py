"""The event-driven strategy API, as researchers import it: ``from pitwall.events import ...``.

Write a :class:`Strategy` subclass; run it locally with :func:`run_local` (a notebook
tool: the strategy runs in the kernel, unsandboxed) or officially with
``pitwall run --engine event`` (the strategy in a gVisor sandbox, bars fed in lock-step,
the broker trusted outside; fill rules in :mod:`pitwall.engine.broker`).

Only the strategy-side names are imported eagerly; the trusted engine's (``Broker``,
``BrokerCosts``, ``Market``, ``EventResult``) and ``run_local`` load on first use so that
a sandboxed strategy importing this module never loads the engine (docs/architecture.md §3).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pitwall.context import Context, Portfolio
from pitwall.event_strategy import Strategy
from pitwall.orders import Fill, Order, OrderType

if TYPE_CHECKING:
    from pitwall.engine.broker import Broker, BrokerCosts
    from pitwall.engine.event_result import EventResult
    from pitwall.engine.market import Market
    from pitwall.notebook.event_quick_run import run_local

_LAZY = {"Broker": "pitwall.engine.broker", "BrokerCosts": "pitwall.engine.broker",
         "EventResult": "pitwall.engine.event_result", "Market": "pitwall.engine.market",
         "run_local": "pitwall.notebook.event_quick_run"}

__all__ = ["Broker", "BrokerCosts", "Context", "EventResult", "Fill", "Market", "Order",
           "OrderType", "Portfolio", "Strategy", "run_local"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pitwall.events' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
