"""The strategy API researchers write against.

A vectorized strategy is a plain function: it takes a Polars frame of bars
(``ts, symbol, open, high, low, close, volume``, sorted by ``symbol, ts``) and keyword
parameters, and returns target weights per ``(ts, symbol)``. A weight decided at bar
``t`` (with everything known at its close) is executed by the trusted engine at the
open of bar ``t+1``.

Example
-------
>>> import polars as pl
>>> import pitwall
>>> @pitwall.vectorized
... def always_long(bars: pl.DataFrame) -> pl.DataFrame:
...     return bars.select("ts", "symbol", weight=pl.lit(1.0))
>>> always_long.pitwall_kind
'vectorized'
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast, overload

import polars as pl

WEIGHTS_SCHEMA: dict[str, pl.DataType] = {
    "ts": pl.Datetime("us", "UTC"),
    "symbol": pl.String(),
    "weight": pl.Float64(),
}


class VectorizedStrategy(Protocol):
    """A function from bars (and parameters) to target weights, marked by :func:`vectorized`."""

    pitwall_kind: str

    def __call__(self, bars: pl.DataFrame, /, **params: Any) -> pl.DataFrame: ...


F = TypeVar("F", bound=Callable[..., pl.DataFrame])


@overload
def vectorized(fn: F, /) -> F: ...


@overload
def vectorized(*, lookback: int | None = None) -> Callable[[F], F]: ...


def vectorized(fn: F | None = None, /, *, lookback: int | None = None) -> F | Callable[[F], F]:
    """Mark ``fn(bars, **params) -> weights`` as a vectorized Pitwall strategy.

    ``lookback`` (bars per symbol) promises that the weight at a bar depends on at most
    that many bars of each symbol up to it. A stepped run then calls the strategy on the
    last ``lookback`` bars of each symbol at each decision time instead of the whole
    prefix (still never a later bar), so its cost per decision stops growing.

    >>> @vectorized(lookback=240)
    ... def sma(bars): return bars.select("ts", "symbol", weight=pl.lit(0.0))
    >>> sma.pitwall_lookback
    240
    """
    if lookback is not None and (not isinstance(lookback, int) or lookback < 1):
        raise ValueError(f"lookback must be a positive number of bars, not {lookback!r}")

    def mark(f: F) -> F:
        f.pitwall_kind = "vectorized"  # type: ignore[attr-defined]
        f.pitwall_lookback = lookback  # type: ignore[attr-defined]
        return f

    return mark(fn) if fn is not None else mark


def default_params(fn: Callable[..., Any]) -> dict[str, Any]:
    """The keyword parameters of a strategy function and their defaults."""
    sig = inspect.signature(fn)
    return {
        name: p.default
        for name, p in list(sig.parameters.items())[1:]
        if p.default is not inspect.Parameter.empty
    }


def find_strategy(namespace: dict[str, Any], name: str | None = None) -> VectorizedStrategy:
    """Find the strategy in a module namespace: ``name`` if given, else the one marked one."""
    if name is not None:
        fn = namespace.get(name)
        if not callable(fn):
            raise LookupError(f"the bundle has no function named {name!r}")
        return cast(VectorizedStrategy, fn)
    marked = [v for v in namespace.values() if callable(v) and hasattr(v, "pitwall_kind")]
    if len(marked) != 1:
        found = ", ".join(getattr(v, "__name__", "?") for v in marked) or "none"
        raise LookupError(
            f"mark exactly one function with @pitwall.vectorized (found {len(marked)}: {found})"
        )
    return cast(VectorizedStrategy, marked[0])
