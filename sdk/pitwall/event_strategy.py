"""The event-driven strategy API: subclass :class:`Strategy`, override the callbacks.

Class attributes are the parameters: a run's ``params`` override them by name. The
reserved ones shape the run: ``every``/``at`` (when ``on_bar`` is called; default every
bar), ``timezone`` (of ``at`` and of ``every``'s alignment, default New York) and
``lookback`` (the most bars ``ctx.history`` can return).

Example
-------
>>> import pitwall
>>> class BuyAndHold(pitwall.Strategy):
...     at = "09:31"
...     weight = 1.0
...     def on_bar(self, ctx):
...         ctx.order_target_percent(ctx.symbols[0], self.weight)
>>> BuyAndHold(weight=0.5).params()["weight"]
0.5
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pitwall.schedule import check_schedule

if TYPE_CHECKING:
    from pitwall.context import Context
    from pitwall.orders import Fill


class Strategy:
    """Base class of event-driven strategies; override the ``on_*`` callbacks you need."""

    pitwall_kind: ClassVar[str] = "event"
    every: str | None = None
    at: str | Sequence[str] | None = None
    timezone: str = "America/New_York"
    lookback: int = 500

    def __init__(self, **params: Any) -> None:
        known = self.param_names()
        for name, value in params.items():
            if name not in known:
                raise TypeError(f"{type(self).__name__} has no parameter {name!r}; declare it "
                                f"as a class attribute (known: {sorted(known)})")
            setattr(self, name, value)
        self.schedule()  # fail early on a bad every/at

    @classmethod
    def param_names(cls) -> set[str]:
        """Public, non-callable class attributes: what ``params`` may override."""
        names = set()
        for klass in cls.__mro__:
            for name, value in vars(klass).items():
                if not name.startswith("_") and name != "pitwall_kind" and not (
                        callable(value) or isinstance(value, (classmethod, staticmethod,
                                                              property))):
                    names.add(name)
        return names

    def params(self) -> dict[str, Any]:
        """The parameter values of this instance."""
        return {name: getattr(self, name) for name in sorted(self.param_names())}

    def schedule(self) -> dict[str, Any]:
        """The declared schedule, as the feeder receives it (validated)."""
        raw = {"every": self.every, "at": self.at if isinstance(self.at, str | None)
               else list(self.at), "timezone": self.timezone, "lookback": self.lookback}
        check_schedule(raw)
        return raw

    def on_start(self, ctx: Context) -> None:
        """Called once before the first bar (no bars yet; orders are not allowed)."""

    def on_bar(self, ctx: Context) -> None:
        """Called at each due bar, after its close is known; place orders here."""

    def on_fill(self, ctx: Context, fill: Fill) -> None:
        """Called for each fill, before ``on_bar`` of the bar on which it happened."""

    def on_end(self, ctx: Context) -> None:
        """Called once after the last bar; orders placed here are never filled."""


def find_event_strategy(namespace: dict[str, Any], name: str | None = None) -> type[Strategy]:
    """The :class:`Strategy` subclass of a module: ``name`` if given, else the only one."""
    if name is not None:
        cls = namespace.get(name)
        if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
            raise LookupError(f"the bundle has no Strategy subclass named {name!r}")
        return cls
    found = [v for v in namespace.values()
             if inspect.isclass(v) and issubclass(v, Strategy) and v is not Strategy
             and v.__module__ == namespace.get("__name__")]
    if len(found) != 1:
        names = ", ".join(v.__name__ for v in found) or "none"
        raise LookupError(f"define exactly one pitwall.Strategy subclass in the strategy file, "
                          f"or name it in the entrypoint 'strategy.py:Name' (found {names})")
    return found[0]
