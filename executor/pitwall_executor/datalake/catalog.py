"""A local, versioned Parquet table: content-addressed files plus immutable JSON snapshots.

Layout under the catalog root::

    <root>/<dataset>/data/<sha256>.parquet      one file per calendar month, never rewritten
    <root>/<dataset>/_versions/<NNNNNNNN>.json  version N: the full list of its files
    <root>/<dataset>/reference/<sha256>.parquet listings and corporate actions of a version
                                                (docs/reference-data.md)

A version is committed by creating its JSON file with put-if-absent semantics (a hard link
from a fsynced temp file), so two writers cannot both commit version N and readers never
see a half-written snapshot. Data files are named by their hash, so an old version stays
readable as long as its files are kept: nothing is ever overwritten or deleted here.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import polars as pl

from pitwall.errors import DataError, EmptyRangeError, UnknownDatasetError
from pitwall_executor.datalake.bars_file import BarsFileWriter
from pitwall_executor.datalake.generate import GENERATOR_VERSION, generate_month_chunks
from pitwall_executor.datalake.generate_events import EventRun, reference_tables, schedule
from pitwall_executor.datalake.market_calendar import trading_days
from pitwall_executor.datalake.snapshot import FileEntry, ReferenceFile, Snapshot, SnapshotInfo
from pitwall_executor.storage.objectstore import fsync_dir, sha256_file

__all__ = [
    "Catalog",
    "CommitConflictError",
    "FileEntry",
    "Snapshot",
    "SnapshotInfo",
    "generate_dataset",
    "generation_properties",
]

_DATASET_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_VERSION_DIGITS = 8


class CommitConflictError(DataError):
    """Another writer committed the same version first; re-read the latest and retry."""


@contextmanager
def _temp_file(directory: Path, suffix: str) -> Iterator[tuple[Path, IO[bytes]]]:
    """A new hidden file in ``directory``, removed on exit unless renamed away."""
    path = directory / f".tmp-{uuid.uuid4().hex}{suffix}"
    try:
        with path.open("xb") as fh:
            yield path, fh
    finally:
        path.unlink(missing_ok=True)


def _sync(fh: IO[bytes]) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _suggest(name: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(name, choices, n=1)
    return f"; did you mean {match[0]!r}?" if match else "."


class Catalog:
    """Versioned datasets of minute bars stored under one root directory.

    Examples
    --------
    >>> import tempfile
    >>> catalog = Catalog(Path(tempfile.mkdtemp()))
    >>> catalog.datasets()
    []
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def datasets(self) -> list[str]:
        """Names of the datasets holding at least one version, sorted."""
        if not self.root.is_dir():
            return []
        # "[0-9]*" skips the dot-named temp files of commits in flight.
        return sorted({p.parent.parent.name for p in self.root.glob("*/_versions/[0-9]*.json")})

    def _dataset_dir(self, dataset: str) -> Path:
        if not _DATASET_NAME.match(dataset):
            raise UnknownDatasetError(
                f"dataset name {dataset!r} is not valid; use letters, digits, '_', '.' and '-'"
            )
        return self.root / dataset

    def _version_numbers(self, dataset: str) -> list[int]:
        versions_dir = self._dataset_dir(dataset) / "_versions"
        if not versions_dir.is_dir():
            return []
        names = (p.stem for p in versions_dir.glob("*.json"))
        return sorted(int(n) for n in names if n.isdigit())

    def _unknown_dataset(self, dataset: str) -> UnknownDatasetError:
        existing = self.datasets()
        listing = f"Datasets: {', '.join(existing)}." if existing else "No dataset exists yet."
        return UnknownDatasetError(
            f"dataset {dataset!r} does not exist{_suggest(dataset, existing)} {listing} "
            "Create one with `pitwall data generate`."
        )

    def versions(self, dataset: str) -> list[SnapshotInfo]:
        """Every version of ``dataset``, oldest first."""
        numbers = self._version_numbers(dataset)
        if not numbers:
            raise self._unknown_dataset(dataset)
        return [self.snapshot(dataset, n).info() for n in numbers]

    def snapshot(self, dataset: str, version: int | None = None) -> Snapshot:
        """Version ``version`` of ``dataset``, or its latest version if None."""
        numbers = self._version_numbers(dataset)
        if not numbers:
            raise self._unknown_dataset(dataset)
        if version is None:
            version = numbers[-1]
        elif version not in numbers:
            listed = ", ".join(map(str, numbers))
            raise UnknownDatasetError(
                f"dataset {dataset!r} has no version {version}; its versions are {listed}. "
                f"Omit the version to use the latest ({dataset}@v{numbers[-1]})."
            )
        path = self._dataset_dir(dataset) / "_versions" / f"{version:0{_VERSION_DIGITS}d}.json"
        return Snapshot.from_json(json.loads(path.read_text(encoding="utf-8")))

    def file_path(self, dataset: str, entry: FileEntry) -> Path:
        """Where the bytes of ``entry`` live."""
        return self._dataset_dir(dataset) / entry.path

    def write_file(self, dataset: str, frame: pl.DataFrame) -> FileEntry:
        """Store ``frame`` (bars sorted by symbol, ts) as one immutable Parquet file.

        The file is not part of any version until :meth:`commit` lists it. Writing the same
        bars twice yields the same file.
        """
        return self.write_frames(dataset, [frame])

    def write_frames(self, dataset: str, frames: Iterable[pl.DataFrame]) -> FileEntry:
        """Stream ``frames`` (together sorted by symbol, ts) into one immutable Parquet file.

        Memory is bounded by one frame plus one row group, so a month of 1,000+ symbols can
        arrive in symbol chunks. Row groups hold whole symbols (see ``bars_file``).
        """
        data_dir = self._dataset_dir(dataset) / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        with _temp_file(data_dir, ".parquet") as (tmp, fh):
            writer = BarsFileWriter(fh)
            for frame in frames:
                writer.add(frame)
            stats = writer.close()
            _sync(fh)
            sha = sha256_file(tmp)
            final = data_dir / f"{sha}.parquet"
            os.replace(tmp, final)  # same name means same bytes, so replacing is harmless
        fsync_dir(data_dir)
        assert stats.min_ts is not None and stats.max_ts is not None
        return FileEntry(
            path=f"data/{final.name}",
            sha256=sha,
            size=final.stat().st_size,
            rows=stats.rows,
            min_ts=stats.min_ts,
            max_ts=stats.max_ts,
            symbols=tuple(stats.symbols),
            days=tuple(sorted(stats.days)),
            row_group_symbols=tuple(stats.row_group_symbols),
            row_group_continues=tuple(stats.row_group_continues),
            chunk_index=stats.chunk_index.encode() if stats.chunk_index is not None else "",
        )

    def write_reference(self, dataset: str, frame: pl.DataFrame) -> ReferenceFile:
        """Store one reference table (listings or corporate actions) as an immutable file.

        Like the bars, it is part of no version until :meth:`commit` names it; the same
        rows give the same file.
        """
        ref_dir = self._dataset_dir(dataset) / "reference"
        ref_dir.mkdir(parents=True, exist_ok=True)
        with _temp_file(ref_dir, ".parquet") as (tmp, fh):
            frame.write_parquet(fh, statistics=False)
            _sync(fh)
            sha = sha256_file(tmp)
            final = ref_dir / f"{sha}.parquet"
            os.replace(tmp, final)
        fsync_dir(ref_dir)
        return ReferenceFile(path=f"reference/{final.name}", sha256=sha,
                             size=final.stat().st_size, rows=frame.height)

    def commit(
        self,
        dataset: str,
        files: Sequence[FileEntry],
        *,
        message: str,
        properties: Mapping[str, Any] | None = None,
        reference: Mapping[str, ReferenceFile] | None = None,
    ) -> Snapshot:
        """Make ``files`` (the complete file list) the next version of ``dataset``.

        ``reference`` names the version's reference tables (``write_reference``); None
        carries the previous version's forward, so a bars correction keeps them.

        Raises
        ------
        CommitConflictError
            If another writer committed the same version number meanwhile.
        DataError
            If a listed file is missing or its size differs from the entry.
        """
        root = self._dataset_dir(dataset)
        numbers = self._version_numbers(dataset)
        parent = numbers[-1] if numbers else None
        if reference is None:
            reference = self.snapshot(dataset, parent).reference if parent else {}
        entries: list[FileEntry | ReferenceFile] = [*files, *reference.values()]
        for entry in entries:
            path = root / entry.path
            if not path.is_file() or path.stat().st_size != entry.size:
                raise DataError(f"file {entry.path} of {dataset!r} is missing or changed")
        snapshot = Snapshot(
            dataset=dataset,
            version=(parent or 0) + 1,
            files=tuple(sorted(files, key=lambda f: (f.min_ts, f.path))),
            properties=dict(properties or {}),
            message=message,
            parent=parent,
            reference=dict(reference),
        )
        versions_dir = root / "_versions"
        versions_dir.mkdir(parents=True, exist_ok=True)
        final = versions_dir / f"{snapshot.version:0{_VERSION_DIGITS}d}.json"
        with _temp_file(versions_dir, ".json") as (tmp, fh):
            fh.write(json.dumps(snapshot.to_json(), indent=1).encode())
            _sync(fh)
            try:
                os.link(tmp, final)  # put-if-absent: fails if the version already exists
            except FileExistsError:
                raise CommitConflictError(
                    f"{snapshot.label} was committed by another writer; read the latest "
                    "version and retry"
                ) from None
        fsync_dir(versions_dir)
        return snapshot


def generation_properties(
    symbols: Sequence[str], start: dt.date, end: dt.date, seed: int,
    corporate_events: bool = False,
) -> dict[str, Any]:
    """The parameters recorded in a generated version, compared to decide reuse."""
    return {
        "kind": "synthetic-1min",
        "generator_version": GENERATOR_VERSION,
        "symbols": sorted(symbols),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "seed": seed,
        # Only when asked for, so the parameters of a bars-only dataset stay as they were.
        **({"corporate_events": True} if corporate_events else {}),
    }


def generate_dataset(
    catalog: Catalog,
    dataset: str,
    *,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    seed: int,
    chunk_symbols: int = 256,
    progress: Callable[[int], None] | None = None,
    corporate_events: bool = False,
) -> Snapshot:
    """Generate synthetic bars into ``dataset`` and commit them as a new version.

    Idempotent: if the latest version was generated with the same parameters it is
    returned as is and nothing is written (so ``make demo`` twice reuses the data).
    Streams month by month in chunks of ``chunk_symbols`` symbols, so memory stays bounded
    (about 1.8 MB per chunk symbol) at any size; ``progress`` is called with the rows of
    each chunk written.

    ``corporate_events`` adds synthetic listings, delistings, splits, dividends and renames
    (``generate_events``): the bars are then unadjusted and the version carries its
    listings and corporate actions (docs/reference-data.md).
    """
    params = generation_properties(symbols, start, end, seed, corporate_events)
    if dataset in catalog.datasets():
        latest = catalog.snapshot(dataset)
        if latest.properties.get("generator") == params:
            return latest
    def counted(chunks: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        for chunk in chunks:
            yield chunk
            if progress is not None:
                progress(chunk.height)

    days = trading_days(start, end)
    events = EventRun(schedule(symbols, len(days), seed)) if corporate_events else None
    months = generate_month_chunks(symbols, start, end, seed=seed, chunk_symbols=chunk_symbols,
                                   events=events)
    files = [catalog.write_frames(dataset, counted(chunks)) for chunks in months]
    if not files:
        raise EmptyRangeError(
            f"no trading day between {start} and {end}; pick a range with weekdays"
        )
    reference = None
    if events is not None:
        listings, actions = reference_tables(events.events, days, seed, events.amounts)
        reference = {"listings": catalog.write_reference(dataset, listings),
                     "corporate_actions": catalog.write_reference(dataset, actions)}
    return catalog.commit(
        dataset,
        files,
        message=f"generate {len(params['symbols'])} symbols {start}..{end} seed={seed}",
        properties={"generator": params},
        reference=reference if reference is not None else {},
    )
