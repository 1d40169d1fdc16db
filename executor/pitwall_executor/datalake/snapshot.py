"""What a dataset version is: the immutable list of its files and what each one holds.

These records are the whole of the catalog's metadata; the planner prunes files with them
alone, without opening any file.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import functools
import hashlib
from collections.abc import Mapping
from typing import Any

from pitwall.errors import DataError
from pitwall_executor.datalake.chunk_index import ChunkIndex

# Of the snapshot JSON; bump on an incompatible change. Additions are optional keys that
# older snapshots lack (row_group_symbols, row_group_continues, chunk_index), so every
# format-1 snapshot stays readable; an entry without a chunk index is read via its footer.
_FORMAT = 1


@functools.lru_cache(maxsize=4096)
def _decode_index(text: str) -> ChunkIndex:
    return ChunkIndex.decode(text)


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One immutable data file of a dataset and what it holds."""

    path: str  # relative to the dataset directory, e.g. "data/<sha256>.parquet"
    sha256: str
    size: int
    rows: int
    min_ts: dt.datetime
    max_ts: dt.datetime
    symbols: tuple[str, ...]
    days: tuple[dt.date, ...]  # UTC dates holding at least one bar
    # First symbol of each row group (groups hold whole symbols, sorted), so the planner
    # can name the row groups a request needs without opening the file. Empty if unknown.
    row_group_symbols: tuple[str, ...] = ()
    row_group_continues: tuple[int, ...] = ()  # groups that begin mid-symbol (rare)
    # Byte offsets of every column chunk (ChunkIndex.encode), so a reader fetches exactly
    # the chunks it needs without reading the footer. Empty for files written before it.
    chunk_index: str = dataclasses.field(default="", repr=False)

    @property
    def index(self) -> ChunkIndex | None:
        """The decoded chunk index (cached per process), or None if the entry lacks one."""
        if not self.chunk_index:
            return None
        index = _decode_index(self.chunk_index)
        if index.n_groups != len(self.row_group_symbols):
            raise DataError(f"file {self.path}: chunk index and row-group index disagree")
        return index

    def single_symbol_groups(self, groups: list[int]) -> bool:
        """Whether each of ``groups`` holds exactly one symbol (needs no symbol filter)."""
        firsts, syms = self.row_group_symbols, self.symbols
        position = {s: i for i, s in enumerate(syms)} if len(groups) > 8 else None
        for g in groups:
            a = position[firsts[g]] if position else syms.index(firsts[g])
            if g + 1 < len(firsts):
                b = position[firsts[g + 1]] if position else syms.index(firsts[g + 1])
                # the next group may begin with this group's last symbol, spilling over
                b += (g + 1) in self.row_group_continues
            else:
                b = len(syms)
            if b - a != 1:
                return False
        return True

    def row_groups_for(self, symbols: frozenset[str] | set[str]) -> list[int]:
        """Indices of the row groups that may hold any of ``symbols`` (all if unknown)."""
        firsts = self.row_group_symbols
        if not firsts:
            return []
        keep: set[int] = set()
        for symbol in symbols:
            lo, hi = bisect.bisect_left(firsts, symbol), bisect.bisect_right(firsts, symbol)
            if hi > lo:  # groups starting with the symbol (several only if it is huge)
                keep.update(range(lo, hi))
                if lo in self.row_group_continues:  # it began in the group before
                    keep.add(lo - 1)
            elif lo > 0:  # packed inside the group that starts before it
                keep.add(lo - 1)
        return sorted(keep)

    def to_json(self) -> dict[str, Any]:
        """The entry as stored in a snapshot file."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "rows": self.rows,
            "min_ts": self.min_ts.isoformat(),
            "max_ts": self.max_ts.isoformat(),
            "symbols": list(self.symbols),
            "days": [d.isoformat() for d in self.days],
            **({"row_group_symbols": list(self.row_group_symbols)} if self.row_group_symbols
               else {}),
            **({"row_group_continues": list(self.row_group_continues)}
               if self.row_group_continues else {}),
            **({"chunk_index": self.chunk_index} if self.chunk_index else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileEntry:
        """Read an entry written by :meth:`to_json`."""
        return cls(
            path=data["path"],
            sha256=data["sha256"],
            size=int(data["size"]),
            rows=int(data["rows"]),
            min_ts=dt.datetime.fromisoformat(data["min_ts"]),
            max_ts=dt.datetime.fromisoformat(data["max_ts"]),
            symbols=tuple(data["symbols"]),
            days=tuple(dt.date.fromisoformat(d) for d in data["days"]),
            row_group_symbols=tuple(data.get("row_group_symbols", ())),
            row_group_continues=tuple(data.get("row_group_continues", ())),
            chunk_index=str(data.get("chunk_index", "")),
        )


@dataclasses.dataclass(frozen=True)
class ReferenceFile:
    """One reference table of a version (listings, corporate actions; docs/reference-data.md).

    Stored as ``reference/<sha256>.parquet`` beside the bars and counted in the version's
    content digest, so pinning a version pins its reference data too.
    """

    path: str  # relative to the dataset directory, e.g. "reference/<sha256>.parquet"
    sha256: str
    size: int
    rows: int

    def to_json(self) -> dict[str, Any]:
        """The entry as stored in a snapshot file."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReferenceFile:
        """Read an entry written by :meth:`to_json`."""
        return cls(path=data["path"], sha256=data["sha256"], size=int(data["size"]),
                   rows=int(data["rows"]))


@dataclasses.dataclass(frozen=True)
class SnapshotInfo:
    """A version as listed: who it follows, when and why it was made, how big it is."""

    dataset: str
    version: int
    parent: int | None
    created_at: dt.datetime
    message: str
    n_files: int
    rows: int


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """One version of a dataset: the complete, immutable list of its files."""

    dataset: str
    version: int
    files: tuple[FileEntry, ...]
    properties: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    created_at: dt.datetime = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC))
    message: str = ""
    parent: int | None = None
    # Reference tables by name ("listings", "corporate_actions"); empty for bars only.
    reference: Mapping[str, ReferenceFile] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        """``dataset@vN``, as errors and logs name a pinned version."""
        return f"{self.dataset}@v{self.version}"

    @functools.cached_property
    def symbols(self) -> frozenset[str]:
        """Every symbol held by some file of the version."""
        return frozenset(s for f in self.files for s in f.symbols)

    @functools.cached_property
    def content_digest(self) -> str:
        """The version's identity by content: sha256 over its files' own sha256, sorted.

        Two lakes can both hold a ``sample@v1``; only this says whether they hold the same
        bytes. A run manifest records it, and a rerun refuses other data under the name.
        """
        digest = hashlib.sha256()
        for sha in sorted(f.sha256 for f in self.files):
            digest.update(sha.encode() + b"\n")
        # Only versions with reference data hash it, so every older digest stays the same.
        for name in sorted(self.reference):
            digest.update(f"{name}:{self.reference[name].sha256}\n".encode())
        return "sha256:" + digest.hexdigest()

    @property
    def first_ts(self) -> dt.datetime | None:
        """Timestamp of the first bar, or None for a version without files."""
        return min((f.min_ts for f in self.files), default=None)

    @property
    def last_ts(self) -> dt.datetime | None:
        """Timestamp of the last bar, or None for a version without files."""
        return max((f.max_ts for f in self.files), default=None)

    @property
    def rows(self) -> int:
        """Number of bars in the version."""
        return sum(f.rows for f in self.files)

    def info(self) -> SnapshotInfo:
        """The summary :meth:`Catalog.versions` lists."""
        return SnapshotInfo(
            self.dataset, self.version, self.parent, self.created_at, self.message,
            len(self.files), self.rows,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        """The snapshot as stored in ``_versions/<N>.json``."""
        return {
            "format": _FORMAT,
            "dataset": self.dataset,
            "version": self.version,
            "parent": self.parent,
            "created_at": self.created_at.isoformat(),
            "message": self.message,
            "properties": dict(self.properties),
            "files": [f.to_json() for f in self.files],
            **({"reference": {k: v.to_json() for k, v in sorted(self.reference.items())}}
               if self.reference else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        """Read a snapshot written by :meth:`to_json`."""
        if data.get("format") != _FORMAT:
            raise DataError(f"snapshot format {data.get('format')!r} is not supported")
        return cls(
            dataset=data["dataset"],
            version=int(data["version"]),
            files=tuple(FileEntry.from_json(f) for f in data["files"]),
            properties=data["properties"],
            created_at=dt.datetime.fromisoformat(data["created_at"]),
            message=data["message"],
            parent=data["parent"],
            reference={k: ReferenceFile.from_json(v)
                       for k, v in data.get("reference", {}).items()},
        )
