"""Writing one bars file as a stream: row groups cut at symbol boundaries, stats gathered.

The layout benchmark (``bench/data_layout.py``, docs/decisions/0002-layout.md) chose
``year/month`` files sorted by ``(symbol, ts)`` whose row groups each hold whole symbols:
one symbol per group for minute bars (~8k rows a month), several small symbols packed
together for sparse data (daily bars), so a symbol's min/max statistics prune groups and a
reader fetches about exactly the bytes it needs. Frames arrive one after another (a month
in symbol chunks), so 100M-row datasets stream through a bounded heap.

Encodings (measured on a 520-symbol month, decision 0002): ``ts`` and ``volume`` delta-encoded
without a dictionary (a month of 1-minute ``ts`` shrinks from 68 KB to 0.4 KB a symbol; the
file from 83 to 47 MB), prices dictionary-encoded; statistics only on ``ts`` and ``symbol``
(the only columns anything prunes on; footer 418 -> 300 KB); page CRCs on, so a ranged
reader can check what it fetched. The byte offset of every column chunk is recorded
(:class:`~pitwall_executor.datalake.chunk_index.ChunkIndex`) so readers skip the footer.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import IO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pitwall.errors import DataError
from pitwall_executor.datalake.chunk_index import ChunkIndex
from pitwall_executor.datalake.generate import BARS_SCHEMA

MIN_ROW_GROUP_ROWS = 4_096  # below this, per-group overhead outweighs finer pruning
MAX_ROW_GROUP_ROWS = 1 << 20
WRITER_OPTIONS: dict[str, object] = {
    "compression": "zstd",
    "write_statistics": ["ts", "symbol"],
    "use_dictionary": ["symbol", "open", "high", "low", "close"],
    "column_encoding": {"ts": "DELTA_BINARY_PACKED", "volume": "DELTA_BINARY_PACKED"},
    "write_page_checksum": True,
}


@dataclasses.dataclass
class FileStats:
    """What a written file holds, gathered while streaming (no re-read)."""

    rows: int = 0
    min_ts: dt.datetime | None = None
    max_ts: dt.datetime | None = None
    symbols: list[str] = dataclasses.field(default_factory=list)
    days: set[dt.date] = dataclasses.field(default_factory=set)
    row_group_symbols: list[str] = dataclasses.field(default_factory=list)  # first of each
    row_group_continues: list[int] = dataclasses.field(default_factory=list)  # start mid-symbol
    chunk_index: ChunkIndex | None = None  # set by close()


def check_sorted(frame: pl.DataFrame) -> None:
    """Refuse frames the planner could not trust: wrong schema, unsorted, or empty."""
    if frame.schema != BARS_SCHEMA:
        raise DataError(f"bars must have schema {dict(BARS_SCHEMA)}; got {dict(frame.schema)}")
    if frame.is_empty():
        raise DataError("refusing to write an empty file; skip months without bars")
    sym, ts = pl.col("symbol"), pl.col("ts")
    out_of_order = (sym > sym.shift(-1)) | ((sym == sym.shift(-1)) & (ts >= ts.shift(-1)))
    if frame.select(out_of_order.any()).item():
        raise DataError("bars must be sorted by (symbol, ts) without duplicates; sort them first")


class BarsFileWriter:
    """Appends sorted bar frames to one Parquet file (:data:`WRITER_OPTIONS`).

    Each frame must be sorted by ``(symbol, ts)`` and start after the previous one ends.
    """

    def __init__(self, sink: IO[bytes], *, min_rows: int = MIN_ROW_GROUP_ROWS) -> None:
        self._sink = sink
        self._min_rows = min_rows
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_symbol: str | None = None
        self._written_symbol: str | None = None
        self._last_key: tuple[str, dt.datetime] | None = None
        self.stats = FileStats()

    def add(self, frame: pl.DataFrame) -> None:
        """Append ``frame``; whole symbols are packed into row groups of >= min_rows rows."""
        check_sorted(frame)
        first = (frame["symbol"][0], frame["ts"][0])
        if self._last_key is not None and first <= self._last_key:
            raise DataError("frames must follow each other in (symbol, ts) order; sort them")
        self._last_key = (frame["symbol"][-1], frame["ts"][-1])
        self._update_stats(frame)
        table = frame.to_arrow()
        runs = frame["symbol"].rle()  # consecutive runs: one per symbol, since sorted
        offset = 0
        for run in runs.struct.unnest().iter_rows(named=True):
            n, symbol = int(run["len"]), run["value"]
            # Cut where a new symbol starts, so a symbol normally lies in one group and
            # the planner's row-group index is exact (spills are recorded as continues).
            full = self._pending_rows >= self._min_rows
            too_big = self._pending_rows + n > MAX_ROW_GROUP_ROWS
            if symbol != self._pending_symbol and (full or too_big):
                self._flush()
            self._pending.append(table.slice(offset, n))
            self._pending_rows += n
            self._pending_symbol = symbol
            offset += n

    def _update_stats(self, frame: pl.DataFrame) -> None:
        st = self.stats
        st.rows += frame.height
        lo, hi = frame["ts"].min(), frame["ts"].max()
        assert isinstance(lo, dt.datetime) and isinstance(hi, dt.datetime)
        st.min_ts = lo if st.min_ts is None else min(st.min_ts, lo)
        st.max_ts = hi if st.max_ts is None else max(st.max_ts, hi)
        new = frame["symbol"].unique(maintain_order=True).to_list()
        if st.symbols and new[0] == st.symbols[-1]:
            new = new[1:]  # the previous frame's last symbol continues here
        st.symbols.extend(new)
        st.days.update(frame["ts"].dt.date().unique().to_list())

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending).combine_chunks()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._sink, table.schema, **WRITER_OPTIONS)
        for start in range(0, table.num_rows, MAX_ROW_GROUP_ROWS):
            part = table.slice(start, MAX_ROW_GROUP_ROWS)
            self._writer.write_table(part, row_group_size=part.num_rows)
            first, last = str(part.column("symbol")[0]), str(part.column("symbol")[-1])
            if first == self._written_symbol:  # a symbol spilling over from the last group
                self.stats.row_group_continues.append(len(self.stats.row_group_symbols))
            self.stats.row_group_symbols.append(first)
            self._written_symbol = last
        self._pending, self._pending_rows = [], 0

    def close(self) -> FileStats:
        """Write the last row group and the footer; return what the file holds."""
        self._flush()
        if self._writer is None:
            raise DataError("refusing to write an empty file; skip months without bars")
        self._writer.close()
        self.stats.chunk_index = ChunkIndex.from_metadata(self._writer.writer.metadata)
        return self.stats
