"""The Backtest API (docs/architecture.md §2): tornado handlers over the Stack; one table
in app.py."""

from __future__ import annotations

from pitwall_executor.api.app import make_app

__all__ = ["make_app"]
