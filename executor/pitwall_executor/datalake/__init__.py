"""The data layer: synthetic bars, a versioned Parquet catalog, and read planning (§6).

Everything public of the package is importable from here. ``S3ObjectStore`` (aiobotocore)
and the retention helpers of ``versions`` (SQLAlchemy) are loaded on first use, so importing
the package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pitwall_executor.datalake.bars_file import BarsFileWriter, FileStats, check_sorted
from pitwall_executor.datalake.cache import CacheFullError, FileCache, Pin
from pitwall_executor.datalake.catalog import (
    Catalog,
    CommitConflictError,
    generate_dataset,
    generation_properties,
)
from pitwall_executor.datalake.chunk_index import ChunkIndex, GroupRead, read_groups
from pitwall_executor.datalake.generate import (
    BARS_SCHEMA,
    generate_bars,
    generate_month_chunks,
    sample_symbols,
)
from pitwall_executor.datalake.importer import ImportResult, adjust, import_bars, parse_mapping
from pitwall_executor.datalake.ingest import upsert
from pitwall_executor.datalake.lake_files import (
    LakeFiles,
    MirroredCatalog,
    PushReport,
    push_dataset,
    sync_metadata,
)
from pitwall_executor.datalake.market_calendar import (
    is_trading_day,
    session_close_utc,
    session_minutes,
    session_open_utc,
    trading_days,
    trading_minutes,
    us_market_holidays,
)
from pitwall_executor.datalake.planner import (
    ReadPlan,
    load_bars,
    plan,
    plan_read,
    read_indexed,
    scan_bars,
    validate_request,
)
from pitwall_executor.datalake.snapshot import FileEntry, Snapshot, SnapshotInfo
from pitwall_executor.storage import (
    ChecksumMismatchError,
    LocalObjectStore,
    ObjectNotFoundError,
    ObjectStore,
    ObjectStoreError,
    open_store,
    sha256_bytes,
    sha256_file,
)

if TYPE_CHECKING:
    from pitwall_executor.datalake.versions import (
        VacuumReport,
        diff,
        file_pins,
        job_pins,
        pin,
        vacuum,
    )
    from pitwall_executor.storage.s3 import S3ObjectStore, S3Tuning

__all__ = [
    "BARS_SCHEMA",
    "BarsFileWriter",
    "CacheFullError",
    "Catalog",
    "ChecksumMismatchError",
    "ChunkIndex",
    "CommitConflictError",
    "FileCache",
    "FileEntry",
    "FileStats",
    "GroupRead",
    "ImportResult",
    "LakeFiles",
    "LocalObjectStore",
    "MirroredCatalog",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectStoreError",
    "Pin",
    "PushReport",
    "ReadPlan",
    "S3ObjectStore",
    "S3Tuning",
    "Snapshot",
    "SnapshotInfo",
    "VacuumReport",
    "adjust",
    "check_sorted",
    "diff",
    "file_pins",
    "generate_bars",
    "generate_dataset",
    "generate_month_chunks",
    "generation_properties",
    "import_bars",
    "is_trading_day",
    "job_pins",
    "load_bars",
    "open_store",
    "parse_mapping",
    "pin",
    "plan",
    "plan_read",
    "push_dataset",
    "read_groups",
    "read_indexed",
    "sample_symbols",
    "scan_bars",
    "session_close_utc",
    "session_minutes",
    "session_open_utc",
    "sha256_bytes",
    "sha256_file",
    "sync_metadata",
    "trading_days",
    "trading_minutes",
    "upsert",
    "us_market_holidays",
    "vacuum",
    "validate_request",
]

_LAZY = { "VacuumReport": "versions",
         "diff": "versions", "file_pins": "versions", "job_pins": "versions",
         "pin": "versions", "vacuum": "versions"}


def __getattr__(name: str) -> Any:
    if name in ("S3ObjectStore", "S3Tuning"):  # aiobotocore loads only when S3 is used
        from pitwall_executor.storage import s3

        return getattr(s3, name)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
