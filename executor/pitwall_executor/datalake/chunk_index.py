"""Where each column chunk of a bars file lies, kept in the snapshot, and footer-free reads.

A month file holds one row group per symbol (~520 of them), so its Parquet footer (~280 KB
even with statistics on ``ts``/``symbol`` only) outweighs one symbol's bytes (~50 KB a
month). The writer therefore records, at ingest, the byte offset of every column chunk and
the rows of every row group (:class:`ChunkIndex`, ~22 bytes a row group, stored compactly in
the snapshot). A reader that knows the row groups it needs (``FileEntry.row_groups_for``)
fetches exactly those column chunks (one ranged read per run of chunks less than
:data:`HOLE_BYTES` apart) and decodes them through a small Parquet footer built here for
just those chunks: the footer of the file itself is never read (decision 0002).

The synthesized file is ``PAR1`` + the fetched chunks + a Thrift (compact protocol)
``FileMetaData`` naming them + length + ``PAR1``. Page headers inside chunks hold no
absolute offsets, so chunks can be moved; Parquet's own page CRCs (written by the bars
writer) let a remote reader check each page it decodes.
"""

from __future__ import annotations

import base64
import bisect
import dataclasses
import functools
import struct
from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from pitwall.errors import DataError

__all__ = ["COLUMNS", "ChunkIndex", "Fetch", "GroupRead", "read_groups"]

# The bars columns in file order: (name, Parquet physical type, kind). Physical types:
# INT64 = 2, DOUBLE = 5, BYTE_ARRAY = 6.
COLUMNS: tuple[tuple[str, int, str], ...] = (
    ("ts", 2, "timestamp_us_utc"),
    ("symbol", 6, "string"),
    ("open", 5, "plain"),
    ("high", 5, "plain"),
    ("low", 5, "plain"),
    ("close", 5, "plain"),
    ("volume", 2, "plain"),
)
NAMES = tuple(c[0] for c in COLUMNS)
_PHYSICAL = {"INT64": 2, "DOUBLE": 5, "BYTE_ARRAY": 6}
_TAG = "c1:"  # encoding version of ChunkIndex.encode
_ZSTD = 6
_CREATED_BY = b"parquet-cpp-arrow version 26.0.1"  # readers apply no legacy workarounds

Fetch = Callable[[Sequence[tuple[int, int]]], Sequence[bytes | memoryview]]
"""Reads byte ranges ``[start, end)`` of one file; returns their bytes in order."""


# -- the index --------------------------------------------------------------------------


def _varints(values: Sequence[int]) -> bytes:
    out = bytearray()
    for value in values:
        if value < 0:
            raise ValueError("varints are unsigned")
        out += _uvarint(value)
    return bytes(out)


def _unvarints(data: bytes) -> list[int]:
    out, value, shift = [], 0, 0
    for b in data:
        value |= (b & 0x7F) << shift
        if b & 0x80:
            shift += 7
        else:
            out.append(value)
            value, shift = 0, 0
    if shift:
        raise ValueError("truncated varint")
    return out


@dataclasses.dataclass(frozen=True)
class ChunkIndex:
    """Byte offsets of every column chunk of a bars file (columns in :data:`NAMES` order)."""

    rows: tuple[int, ...]  # rows of each row group
    bounds: tuple[int, ...]  # start of chunk (group, column), row-major, then the data end

    def __post_init__(self) -> None:
        n = len(NAMES)
        if len(self.bounds) != len(self.rows) * n + 1 or any(
                b >= c for b, c in zip(self.bounds, self.bounds[1:], strict=False)):
            raise DataError("chunk index is malformed (bounds must increase, one per chunk)")

    @property
    def n_groups(self) -> int:
        return len(self.rows)

    def chunk(self, group: int, column: int) -> tuple[int, int]:
        """``[start, end)`` of one column chunk."""
        i = group * len(NAMES) + column
        return self.bounds[i], self.bounds[i + 1]

    def encode(self) -> str:
        """A compact ASCII form for the snapshot JSON (versioned by its prefix)."""
        deltas = [b - a for a, b in zip(self.bounds, self.bounds[1:], strict=False)]
        raw = _varints([len(self.rows), self.bounds[0], *deltas, *self.rows])
        return _TAG + base64.b64encode(raw).decode("ascii")

    @classmethod
    def decode(cls, text: str) -> ChunkIndex:
        """Read :meth:`encode`'s output; :class:`DataError` if it is not one."""
        if not text.startswith(_TAG):
            raise DataError(f"unknown chunk index encoding {text[:8]!r}")
        try:
            values = _unvarints(base64.b64decode(text[len(_TAG):], validate=True))
        except ValueError as exc:
            raise DataError(f"chunk index is corrupt: {exc}") from None
        n = values[0] if values else -1
        n_chunks = n * len(NAMES)
        if n < 1 or len(values) != 2 + n_chunks + n:
            raise DataError("chunk index is corrupt: wrong length")
        bounds = [values[1]]
        for d in values[2:2 + n_chunks]:
            bounds.append(bounds[-1] + d)
        return cls(rows=tuple(values[2 + n_chunks:]), bounds=tuple(bounds))

    @classmethod
    def from_metadata(cls, meta: pq.FileMetaData) -> ChunkIndex | None:
        """The index of a written file, or None if its chunks are not the plain bars layout."""
        schema = meta.schema
        if tuple(schema.names) != NAMES or meta.num_row_groups == 0:
            return None
        ts_type = str(schema.column(0).logical_type)
        if (any(schema.column(c).max_definition_level != 1 for c in range(len(NAMES)))
                or "isAdjustedToUTC=true" not in ts_type or "microseconds" not in ts_type):
            return None  # not the flat OPTIONAL columns and UTC microseconds footer() writes
        bounds: list[int] = []
        rows: list[int] = []
        end = None
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            rows.append(group.num_rows)
            for c, (_name, physical, _kind) in enumerate(COLUMNS):
                col = group.column(c)
                start = (col.dictionary_page_offset if col.has_dictionary_page
                         else col.data_page_offset)
                if (_PHYSICAL.get(col.physical_type) != physical or col.compression != "ZSTD"
                        or col.num_values != group.num_rows or (end is not None and start != end)):
                    return None
                bounds.append(start)
                end = start + col.total_compressed_size
        assert end is not None
        bounds.append(end)
        return cls(tuple(rows), tuple(bounds))


# -- a minimal Parquet footer in Thrift's compact protocol ---------------------------------


class _Thrift:
    """Just enough of the compact protocol to write a ``FileMetaData``."""

    I32, I64, BINARY, LIST, STRUCT, TRUE = 5, 6, 8, 9, 12, 1

    def __init__(self) -> None:
        self.out = bytearray()
        self._last = [0]

    def _varint(self, v: int) -> None:
        while v >= 0x80:
            self.out.append((v & 0x7F) | 0x80)
            v >>= 7
        self.out.append(v)

    def field(self, fid: int, ctype: int) -> None:
        delta = fid - self._last[-1]
        if 0 < delta <= 15:
            self.out.append((delta << 4) | ctype)
        else:
            self.out.append(ctype)
            self._varint((fid << 1) ^ (fid >> 15))
        self._last[-1] = fid

    def int_(self, fid: int, value: int, ctype: int = I64) -> None:
        self.field(fid, ctype)
        self._varint((value << 1) ^ (value >> 63))

    def binary(self, fid: int, value: bytes) -> None:
        self.field(fid, self.BINARY)
        self._varint(len(value))
        self.out += value

    def list_(self, fid: int, etype: int, n: int) -> None:
        self.field(fid, self.LIST)
        if n < 15:
            self.out.append((n << 4) | etype)
        else:
            self.out.append(0xF0 | etype)
            self._varint(n)

    def begin(self, fid: int | None = None) -> None:
        """Open a struct: a field of the current one, or (fid None) a list element."""
        if fid is not None:
            self.field(fid, self.STRUCT)
        self._last.append(0)

    def end(self) -> None:
        self.out.append(0)
        self._last.pop()


def _schema(t: _Thrift, columns: Sequence[int]) -> None:
    t.list_(2, t.STRUCT, len(columns) + 1)
    t.begin()
    t.int_(3, 0, t.I32)  # repetition REQUIRED
    t.binary(4, b"schema")
    t.int_(5, len(columns), t.I32)
    t.end()
    for c in columns:
        name, physical, kind = COLUMNS[c]
        t.begin()
        t.int_(1, physical, t.I32)
        t.int_(3, 1, t.I32)  # OPTIONAL, as Arrow writes nullable fields
        t.binary(4, name.encode())
        if kind == "string":
            t.int_(6, 0, t.I32)  # converted type UTF8
            t.begin(10)
            t.begin(1)  # logical type STRING
            t.end()
            t.end()
        elif kind == "timestamp_us_utc":
            t.int_(6, 10, t.I32)  # converted type TIMESTAMP_MICROS
            t.begin(10)
            t.begin(8)  # logical type TIMESTAMP
            t.field(1, t.TRUE)  # isAdjustedToUTC
            t.begin(2)
            t.begin(2)  # unit MICROS
            t.end()
            t.end()
            t.end()
            t.end()
        t.end()


def _uvarint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


@functools.lru_cache(maxsize=64)
def _schema_bytes(columns: tuple[int, ...]) -> bytes:
    """Fields 1-2 of ``FileMetaData`` (version, schema) for ``columns``."""
    t = _Thrift()
    t.int_(1, 2, t.I32)  # version
    _schema(t, columns)
    return bytes(t.out)


@functools.lru_cache(maxsize=64)
def _meta_prefix(column: int) -> bytes:
    """``ColumnMetaData`` fields 1-4 and the header of field 5 (num_values) of a column."""
    name, physical, _kind = COLUMNS[column]
    return (bytes([0x15]) + _uvarint(physical << 1)  # 1: type
            + bytes([0x19, 0x35, 0, 6, 16])  # 2: encodings PLAIN, RLE, RLE_DICTIONARY
            + bytes([0x19, 0x18, len(name)]) + name.encode()  # 3: path_in_schema
            + bytes([0x15, _ZSTD << 1, 0x16]))  # 4: codec ZSTD; 5: num_values follows


def footer(groups: Sequence[tuple[int, Sequence[tuple[int, int]]]],
           columns: Sequence[int]) -> bytes:
    """A ``FileMetaData`` for row groups ``(rows, [(offset, size) per column])``.

    Thrift compact protocol, written directly: schema from :func:`_schema`, then per column
    chunk ``file_offset`` and a ``ColumnMetaData`` (type, encodings, path, codec ZSTD,
    num_values = rows, sizes, data_page_offset = chunk start; the reader finds a dictionary
    page by its header). The uncompressed size is unknown here and set to the compressed
    one: readers use it only as an allocation hint.
    """
    cols = tuple(columns)
    prefixes = [_meta_prefix(c) for c in cols]
    out = bytearray(_schema_bytes(cols))
    out += b"\x16" + _uvarint(sum(rows for rows, _ in groups) << 1)  # 3: num_rows
    out += _list_header(0x19, len(groups))  # 4: row_groups
    for rows, chunks in groups:
        rows_v = _uvarint(rows << 1)
        out += _list_header(0x19, len(chunks))  # RowGroup 1: columns
        total = 0
        for prefix, (offset, size) in zip(prefixes, chunks, strict=True):
            off_v, size_v = _uvarint(offset << 1), _uvarint(size << 1)
            total += size
            # ColumnChunk 2: file_offset, 3: meta_data {...}, stop; 6/7: sizes; 9: data page
            out += (b"\x26" + off_v + b"\x1c" + prefix + rows_v + b"\x16" + size_v
                    + b"\x16" + size_v + b"\x26" + off_v + b"\x00\x00")
        out += b"\x16" + _uvarint(total << 1) + b"\x16" + rows_v + b"\x00"  # 2, 3, stop
    out += b"\x28" + _uvarint(len(_CREATED_BY)) + _CREATED_BY  # 6: created_by
    out.append(0)
    return bytes(out)


def _list_header(field_header: int, n: int) -> bytes:
    """A list-of-structs field: its header byte, then the size and element type."""
    if n < 15:
        return bytes([field_header, (n << 4) | _Thrift.STRUCT])
    return bytes([field_header, 0xF0 | _Thrift.STRUCT]) + _uvarint(n)


def footer_reference(groups: Sequence[tuple[int, Sequence[tuple[int, int]]]],
                     columns: Sequence[int]) -> bytes:
    """:func:`footer` written field by field with :class:`_Thrift` (the tests compare them)."""
    t = _Thrift()
    t.int_(1, 2, t.I32)
    _schema(t, columns)
    t.int_(3, sum(rows for rows, _ in groups))
    t.list_(4, t.STRUCT, len(groups))
    for rows, chunks in groups:
        t.begin()
        t.list_(1, t.STRUCT, len(chunks))
        for c, (offset, size) in zip(columns, chunks, strict=True):
            name, physical, _kind = COLUMNS[c]
            t.begin()
            t.int_(2, offset)
            t.begin(3)
            t.int_(1, physical, t.I32)
            t.list_(2, t.I32, 3)
            t.out += bytes([0, 6, 16])
            t.list_(3, t.BINARY, 1)
            t.out += bytes([len(name)]) + name.encode()
            t.int_(4, _ZSTD, t.I32)
            t.int_(5, rows)
            t.int_(6, size)
            t.int_(7, size)
            t.int_(9, offset)
            t.end()
            t.end()
        t.int_(2, sum(size for _, size in chunks))
        t.int_(3, rows)
        t.end()
    t.binary(6, _CREATED_BY)
    t.out.append(0)
    return bytes(t.out)


# -- reading ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GroupRead:
    """Row groups of one file to read, and how to fetch its bytes."""

    index: ChunkIndex
    groups: Sequence[int]
    fetch: Fetch


THREADED_BYTES = 4 << 20  # decode with Arrow's thread pool above this many bytes
HOLE_BYTES = 8192  # a gap this small between two needed chunks is read, not a new request


def byte_ranges(index: ChunkIndex, groups: Sequence[int], columns: Sequence[int],
                hole: int = HOLE_BYTES) -> list[tuple[int, int]]:
    """The chunks of ``groups`` × ``columns``: one range per run of chunks at most ``hole``
    bytes apart (the bytes between are read along rather than costing a request)."""
    out: list[tuple[int, int]] = []
    for g in sorted(groups):
        for c in columns:
            start, end = index.chunk(g, c)
            if out and start - out[-1][1] <= hole:
                out[-1] = (out[-1][0], end)
            else:
                out.append((start, end))
    return out


def assemble(reads: Sequence[GroupRead], columns: Sequence[int],
             order: Sequence[tuple[int, int]] | None = None) -> bytes:
    """One in-memory Parquet file holding exactly the requested chunks.

    Each read's ranges are fetched with one call of its ``fetch``; the row groups appear in
    ``order`` (``(read position, group)`` pairs), by default read by read.
    """
    parts: list[bytes | memoryview] = [b"PAR1"]
    size = 4
    placed: list[tuple[list[int], list[int]]] = []  # per read: range starts, their shifts
    for read in reads:
        ranges = byte_ranges(read.index, read.groups, columns)
        blobs = read.fetch(ranges) if ranges else []
        if len(blobs) != len(ranges):
            raise DataError("ranged read returned the wrong number of ranges")
        shifts: list[int] = []  # per range: where its bytes land minus where they were
        for (start, end), blob in zip(ranges, blobs, strict=True):
            if len(blob) != end - start:
                raise DataError(f"ranged read of [{start}, {end}) returned {len(blob)} bytes; "
                                "the file is shorter than its snapshot says")
            shifts.append(size - start)
            parts.append(blob)
            size += end - start
        placed.append(([r[0] for r in ranges], shifts))
    if order is None:
        order = [(i, g) for i, read in enumerate(reads) for g in read.groups]
    meta: list[tuple[int, list[tuple[int, int]]]] = []
    for i, g in order:
        index = reads[i].index
        starts, shifts = placed[i]
        chunks = []
        for c in columns:
            start, end = index.chunk(g, c)
            chunks.append((start + shifts[bisect.bisect_right(starts, start) - 1], end - start))
        meta.append((index.rows[g], chunks))
    tail = footer(meta, columns)
    parts += [tail, struct.pack("<I", len(tail)), b"PAR1"]
    return b"".join(parts)


def read_groups(reads: Sequence[GroupRead], columns: Sequence[str], *,
                order: Sequence[tuple[int, int]] | None = None,
                verify_pages: bool = False) -> pa.Table:
    """The requested row groups of several files as one table, without reading any footer.

    ``columns`` are bars column names (any order; returned in file order); ``order`` as in
    :func:`assemble`. With ``verify_pages`` each page's CRC is checked (for bytes fresh
    from a remote store).
    """
    wanted = sorted(NAMES.index(c) for c in set(columns))
    if not any(r.groups for r in reads):
        raise DataError("nothing to read")
    data = assemble(reads, wanted, order)
    pf = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=verify_pages)
    # Threads pay only for big reads: on a busy worker host they mostly wait for a core.
    return pf.read(use_threads=len(data) > THREADED_BYTES)
