"""The trusted engine: validates strategy output, fills, accounts, measures and reports.

It runs in the worker, outside the sandbox; nothing here trusts what a strategy returned.
Conventions are in ``docs/engine-conventions.md``.
"""

from __future__ import annotations

from pitwall.engine.metrics import compute_metrics, daily_returns
from pitwall.engine.report import ReportPaths, write_report
from pitwall.engine.validate import validate_weights
from pitwall.engine.vectorized import EngineResult, run_vectorized

__all__ = [
    "EngineResult",
    "ReportPaths",
    "compute_metrics",
    "daily_returns",
    "run_vectorized",
    "validate_weights",
    "write_report",
]
