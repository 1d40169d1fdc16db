"""Pitwall: write a strategy, run it in a sandbox, read trusted results."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pitwall.strategy import default_params, vectorized
from pitwall.version import __version__

if TYPE_CHECKING:  # loaded lazily at run time (see __getattr__), typed for editors and mypy
    from pitwall.event_strategy import Strategy
    from pitwall.notebook.client import Client
    from pitwall.notebook.quick_run import backtest
    from pitwall.reference import adjusted

__all__ = ["Client", "Strategy", "__version__", "adjusted", "backtest", "default_params",
           "load_ipython_extension", "vectorized"]


def load_ipython_extension(shell: object) -> None:
    """``%load_ext pitwall`` registers the ``%%backtest`` cell magic."""
    from pitwall.notebook.magic import load_ipython_extension as load

    load(shell)


def __getattr__(name: str) -> object:
    # Heavy or optional parts load on first use: the sandbox runner imports `pitwall` too.
    if name == "Client":
        from pitwall.notebook.client import Client

        return Client
    if name == "Strategy":  # imports numpy: keep it off the sandbox's cold start
        from pitwall.event_strategy import Strategy

        return Strategy
    if name == "backtest":
        from pitwall.notebook.quick_run import backtest

        return backtest
    if name == "adjusted":  # point-in-time adjusted prices (docs/reference-data.md)
        from pitwall.reference import adjusted

        return adjusted
    raise AttributeError(f"module 'pitwall' has no attribute {name!r}")
