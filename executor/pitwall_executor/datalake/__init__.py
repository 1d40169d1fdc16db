"""The data layer: synthetic bars, a versioned Parquet catalog, and read planning (§6)."""

from __future__ import annotations

from pitwall_executor.datalake.catalog import Catalog, CommitConflictError, generate_dataset
from pitwall_executor.datalake.generate import BARS_SCHEMA, generate_bars, sample_symbols
from pitwall_executor.datalake.market_calendar import trading_days
from pitwall_executor.datalake.planner import load_bars, plan, validate_request
from pitwall_executor.datalake.snapshot import FileEntry, Snapshot, SnapshotInfo

__all__ = [
    "BARS_SCHEMA",
    "Catalog",
    "CommitConflictError",
    "FileEntry",
    "Snapshot",
    "SnapshotInfo",
    "generate_bars",
    "generate_dataset",
    "load_bars",
    "plan",
    "sample_symbols",
    "trading_days",
    "validate_request",
]
