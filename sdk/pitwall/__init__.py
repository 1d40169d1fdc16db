"""Pitwall: write a strategy, run it in a sandbox, read trusted results."""

from __future__ import annotations

from pitwall.strategy import default_params, vectorized

__version__ = "0.1.0"
__all__ = ["__version__", "default_params", "vectorized"]
