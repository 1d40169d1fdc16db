"""Living with versions: pins, retention (vacuum) and the diff between two versions.

A version stays readable while anything may re-run it: a job in the metadata store that
names the dataset and a ``data_version`` (every run records one), or a line in the
dataset's pins file (``<root>/<dataset>/_pins.txt``, one version per line, ``#`` comments).
:func:`vacuum` expires the other old versions and deletes only the data files that no kept
version lists; files are content-addressed and shared between versions, so a correction
of one month leaves every other month's file in place.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

import polars as pl

from pitwall.errors import DataError

if TYPE_CHECKING:
    from pitwall_executor.datalake.catalog import Catalog
    from pitwall_executor.datalake.snapshot import FileEntry, Snapshot
    from pitwall_executor.jobs.store import MetadataStore

_VALUES = ("open", "high", "low", "close", "volume")
# Data files younger than this are never deleted: a writer may have written them and not
# committed yet (write_file, then commit).
DEFAULT_GRACE = dt.timedelta(hours=1)


def pins_path(catalog: Catalog, dataset: str) -> str:
    """Where the pins file of ``dataset`` lives."""
    return str(catalog.root / dataset / "_pins.txt")


def file_pins(catalog: Catalog, dataset: str) -> set[int]:
    """Versions listed in the dataset's pins file (missing file: none)."""
    path = catalog.root / dataset / "_pins.txt"
    if not path.is_file():
        return set()
    pins = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if not text.removeprefix("v").isdigit():
            raise DataError(f"{path}:{number}: {line!r} is not a version number; write e.g. 12")
        pins.add(int(text.removeprefix("v")))
    return pins


def pin(catalog: Catalog, dataset: str, version: int, reason: str = "") -> None:
    """Add ``version`` to the pins file so vacuum never expires it."""
    catalog.snapshot(dataset, version)  # refuse pinning a version that does not exist
    path = catalog.root / dataset / "_pins.txt"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f"{version}" + (f"  # {reason}" if reason else "") + "\n")


def job_pins(store: MetadataStore, dataset: str) -> set[int]:
    """Versions of ``dataset`` referenced by any stored job, whatever its status."""
    return store.data_versions(dataset)


@dataclasses.dataclass(frozen=True)
class VacuumReport:
    """What a vacuum kept and removed (or would, on a dry run)."""

    kept_versions: list[int]
    expired_versions: list[int]
    deleted_files: list[str]
    freed_bytes: int


def vacuum(
    catalog: Catalog,
    dataset: str,
    *,
    keep: int,
    pinned: Iterable[int] = (),
    dry_run: bool = False,
    grace: dt.timedelta = DEFAULT_GRACE,
) -> VacuumReport:
    """Expire all but the latest ``keep`` versions and the ``pinned`` ones; free their files.

    A data file is deleted only if no kept version lists it and it is older than ``grace``.
    Pass ``pinned = job_pins(store, dataset) | file_pins(catalog, dataset)``.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1 (the latest version is always kept), got {keep}")
    numbers = [info.version for info in catalog.versions(dataset)]
    kept = sorted(set(numbers[-keep:]) | (set(pinned) & set(numbers)))
    expired = [n for n in numbers if n not in kept]
    live = {f.path for n in kept for f in catalog.snapshot(dataset, n).files}
    root = catalog.root / dataset
    cutoff = time.time() - grace.total_seconds()
    doomed = [p for p in sorted((root / "data").glob("[0-9a-f]*.parquet"))
              if f"data/{p.name}" not in live and p.stat().st_mtime < cutoff]
    freed = sum(p.stat().st_size for p in doomed)
    if not dry_run:
        # Versions first: a reader then never finds a version whose files are gone.
        for n in expired:
            (root / "_versions" / f"{n:08d}.json").unlink()
        for p in doomed:
            p.unlink()
    return VacuumReport(kept, expired, [f"data/{p.name}" for p in doomed], freed)


def _read_days(catalog: Catalog, snapshot: Snapshot, files: list[FileEntry],
               days: list[dt.date]) -> pl.DataFrame:
    if not files:
        return pl.DataFrame(schema={"ts": pl.Datetime("us", "UTC"), "symbol": pl.String,
                                    **{c: pl.Float64 for c in _VALUES}})
    paths = [catalog.file_path(snapshot.dataset, f) for f in files]
    return (pl.scan_parquet(paths).filter(pl.col("ts").dt.date().is_in(days))
            .with_columns(pl.col("volume").cast(pl.Float64)).collect())


def diff(catalog: Catalog, dataset: str, v1: int, v2: int) -> pl.DataFrame:
    """Rows added, changed and removed from ``v1`` to ``v2``, per symbol and UTC day.

    Files present in both versions (same content hash) are skipped unread; only the days
    held by files that differ are compared, row by row on ``(symbol, ts)``.

    Returns
    -------
    polars.DataFrame
        ``symbol, day, added, changed, removed``, days with no difference left out.
    """
    old, new = catalog.snapshot(dataset, v1), catalog.snapshot(dataset, v2)
    old_paths, new_paths = {f.sha256 for f in old.files}, {f.sha256 for f in new.files}
    differing = [f for f in old.files if f.sha256 not in new_paths] + [
        f for f in new.files if f.sha256 not in old_paths]
    days = sorted({d for f in differing for d in f.days})
    if not days:
        return pl.DataFrame(schema={"symbol": pl.String, "day": pl.Date, "added": pl.UInt32,
                                    "changed": pl.UInt32, "removed": pl.UInt32})
    day_set = set(days)

    def touching(snap: Snapshot) -> list[FileEntry]:
        return [f for f in snap.files if day_set.intersection(f.days)]

    a = _read_days(catalog, old, touching(old), days)
    b = _read_days(catalog, new, touching(new), days)
    joined = a.join(b, on=["symbol", "ts"], how="full", suffix="_new", coalesce=True)
    differs = pl.any_horizontal([pl.col(c).ne_missing(pl.col(f"{c}_new")) for c in _VALUES])
    kind = (pl.when(pl.col("close").is_null()).then(pl.lit("added"))
            .when(pl.col("close_new").is_null()).then(pl.lit("removed"))
            .when(differs).then(pl.lit("changed")))
    out = (joined.with_columns(kind.alias("kind"), pl.col("ts").dt.date().alias("day"))
           .filter(pl.col("kind").is_not_null())
           .group_by("symbol", "day").agg(
               *[(pl.col("kind") == k).sum().alias(k) for k in ("added", "changed", "removed")])
           .sort("symbol", "day"))
    return out
