"""Which files a request needs, and reading exactly those bars.

Planning uses only the snapshot's metadata (no directory listing, no file opened), so the
API can validate a backtest at submit time in microseconds and reject a misspelt symbol or
an empty range with a sentence that says what to do instead.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from pitwall.errors import EmptyRangeError, UnknownSymbolError
from pitwall_executor.datalake.chunk_index import Fetch, GroupRead, read_groups
from pitwall_executor.datalake.generate import BARS_SCHEMA
from pitwall_executor.datalake.group_cache import file_fetch
from pitwall_executor.datalake.market_calendar import trading_days

if TYPE_CHECKING:
    from pathlib import Path

    from pitwall_executor.datalake.catalog import Catalog
    from pitwall_executor.datalake.lake_files import LakeFiles
    from pitwall_executor.datalake.snapshot import FileEntry, Snapshot

_KEY_COLUMNS = ("ts", "symbol")
_LISTED_SYMBOLS = 10


def _utc_bounds(start: dt.date, end: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """``[start 00:00 UTC, end + 1 day 00:00 UTC)``: whole UTC days, end inclusive."""
    lo = dt.datetime.combine(start, dt.time(), tzinfo=dt.UTC)
    if end >= dt.date.max:  # no day after the last date: the bound is the end of time
        return lo, dt.datetime.max.replace(tzinfo=dt.UTC)
    return lo, dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)


def plan(
    snapshot: Snapshot, symbols: Sequence[str], start: dt.date, end: dt.date
) -> list[FileEntry]:
    """Files of ``snapshot`` that may hold bars of ``symbols`` between ``start`` and ``end``.

    A file is kept when its time span overlaps the range, it holds one of the symbols, and
    one of its trading days falls in the range; the result is in time order. Only metadata
    is read.
    """
    lo, hi = _utc_bounds(start, end)
    wanted = set(symbols)
    return [
        f
        for f in snapshot.files
        if f.min_ts < hi
        and f.max_ts >= lo
        and not wanted.isdisjoint(f.symbols)
        and any(start <= d <= end for d in f.days)
    ]


def _time_ordered(files: Sequence[FileEntry]) -> bool:
    """Whether each file's bars all come before the next file's."""
    return all(a.max_ts < b.min_ts for a, b in itertools.pairwise(files))


def _check_symbols(snapshot: Snapshot, symbols: Sequence[str]) -> None:
    if not symbols:
        raise UnknownSymbolError("the universe is empty; list at least one symbol")
    held = snapshot.symbols
    unknown = [s for s in dict.fromkeys(symbols) if s not in held]
    if not unknown:
        return
    choices = sorted(held)
    guesses = [m[0] for s in unknown if (m := difflib.get_close_matches(s, choices, n=1))]
    names = ", ".join(repr(s) for s in unknown)
    subject = f"symbol {names} is" if len(unknown) == 1 else f"symbols {names} are"
    hint = f"; did you mean {', '.join(repr(g) for g in guesses)}?" if guesses else "."
    listed = ", ".join(choices[:_LISTED_SYMBOLS])
    more = f", … (first {_LISTED_SYMBOLS})" if len(choices) > _LISTED_SYMBOLS else ""
    raise UnknownSymbolError(
        f"{subject} not in dataset {snapshot.label}{hint} "
        f"It holds {len(choices)} symbols: {listed}{more}"
    )


def _closed_market(start: dt.date, end: dt.date) -> str:
    """A sentence when the NYSE held no session at all in ``[start, end]``, else ''."""
    try:
        if trading_days(start, end):
            return ""
    except ValueError:  # outside the calendar's years: nothing to say
        return ""
    return " The NYSE held no session in that range (weekend, holiday or closure)."


def _empty_range(snapshot: Snapshot, start: dt.date, end: dt.date) -> EmptyRangeError:
    first, last = snapshot.first_ts, snapshot.last_ts
    if first is None or last is None:
        return EmptyRangeError(f"dataset {snapshot.label} holds no bars; generate or import data")
    return EmptyRangeError(
        f"no bars between {start} and {end} in dataset {snapshot.label}: its data runs from "
        f"{first.date()} to {last.date()} (UTC), on trading days only."
        f"{_closed_market(start, end)} Pick dates inside that range."
    )


def validate_request(
    snapshot: Snapshot, symbols: Sequence[str], start: dt.date, end: dt.date
) -> list[FileEntry]:
    """Check a request against ``snapshot`` and return the files it will read.

    Cheap (metadata only); meant for the API at submit time and for :func:`load_bars`.

    Raises
    ------
    UnknownSymbolError
        A symbol is not in the dataset (the message suggests the closest one).
    EmptyRangeError
        ``end`` is before ``start``, or no trading day of the data falls in the range.
    """
    if end < start:
        raise EmptyRangeError(f"end {end} is before start {start}; swap them")
    _check_symbols(snapshot, symbols)
    files = plan(snapshot, symbols, start, end)
    if not files:
        raise _empty_range(snapshot, start, end)
    return files


def scan_bars(
    paths: Sequence[Path | str],
    symbols: Sequence[str],
    lo: dt.datetime,
    hi: dt.datetime,
    columns: Sequence[str],
) -> pl.LazyFrame:
    """The lazy scan :func:`load_bars` collects: bars of ``symbols`` in ``[lo, hi)``.

    The symbol and time filters and the column selection are pushed into the Parquet scan
    (check with ``.explain()``), so row groups whose statistics exclude the request are
    skipped and unselected columns are never decoded.
    """
    return (
        pl.scan_parquet([str(p) for p in paths], hive_partitioning=False)
        .filter(pl.col("symbol").is_in(list(symbols)), pl.col("ts") >= lo, pl.col("ts") < hi)
        .select(columns)
    )


@dataclasses.dataclass(frozen=True)
class ReadPlan:
    """What a request reads: files, the row groups in each, and the columns."""

    files: tuple[FileEntry, ...]
    row_groups: tuple[tuple[int, ...], ...]  # per file; empty when the file lacks the index
    columns: tuple[str, ...]

    @property
    def n_row_groups(self) -> int:
        """Row groups to fetch, counting a file without an index as one."""
        return sum(len(g) or 1 for g in self.row_groups)


def plan_read(
    snapshot: Snapshot,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    columns: Sequence[str] | None = None,
) -> ReadPlan:
    """Files and row groups of ``snapshot`` a request needs, from metadata alone.

    Row groups come from each file's ``row_group_symbols`` index (groups hold whole symbols),
    so a remote reader can fetch exactly those byte ranges after reading the footer.
    """
    files = validate_request(snapshot, symbols, start, end)
    wanted = set(symbols)
    cols = tuple(c for c in BARS_SCHEMA if c in _KEY_COLUMNS or columns is None or c in columns)
    return ReadPlan(tuple(files), tuple(tuple(f.row_groups_for(wanted)) for f in files), cols)


def load_bars(
    catalog: Catalog,
    snapshot: Snapshot,
    symbols: Sequence[str],
    start: dt.date,
    end: dt.date,
    *,
    columns: Sequence[str] | None = None,
    lake: LakeFiles | None = None,
) -> pl.DataFrame:
    """Bars of ``symbols`` from ``start`` to ``end`` (UTC dates, inclusive) of ``snapshot``.

    Reads only the planned files: with chunk indexes (every file written since they exist),
    exactly the column chunks of the symbols' row groups and no footer
    (:func:`read_indexed`; from S3, only those row groups are fetched and cached when they
    are a small part of a file, see :meth:`LakeFiles.fetches`); otherwise a Polars scan
    with the column selection and the symbol and time filters pushed down.

    Parameters
    ----------
    columns
        Value columns to return besides ``ts`` and ``symbol`` (default: all of them).
    lake
        Where the files come from (an s3:// lake through the worker cache); default: read
        them in place under the catalog's root.

    Returns
    -------
    polars.DataFrame
        Sorted by ``(symbol, ts)``, with the dtypes of :data:`BARS_SCHEMA`.
    """
    wanted = [c for c in BARS_SCHEMA if c in _KEY_COLUMNS or columns is None or c in columns]
    unknown = sorted(set(columns or ()) - set(BARS_SCHEMA))
    if unknown:
        raise ValueError(f"unknown columns {unknown}; bars have {list(BARS_SCHEMA)}")
    files = validate_request(snapshot, symbols, start, end)
    lo, hi = _utc_bounds(start, end)
    if uses_index(files, symbols, lo, hi):
        if lake is not None:  # from S3: only the needed row groups when they are a small part
            held = set(symbols)
            groups = [f.row_groups_for(held.intersection(f.symbols)) for f in files]
            fetches = lake.fetches(snapshot.dataset, files, groups)
        else:
            fetches = [file_fetch(catalog.file_path(snapshot.dataset, f)) for f in files]
        frame = read_indexed(files, fetches, symbols, lo, hi, wanted)
    else:  # no chunk indexes (older files), or a slice of days: Polars reads the footers
        paths = (lake.local_paths(snapshot.dataset, files) if lake is not None
                 else [catalog.file_path(snapshot.dataset, f) for f in files])
        frame = _scan_sorted(files, scan_bars(paths, symbols, lo, hi, wanted))
    if frame.is_empty():
        # Metadata is per file; a symbol may still lack bars on the requested days.
        raise _empty_range(snapshot, start, end)
    schema = pl.Schema({c: BARS_SCHEMA[c] for c in wanted})
    return frame if frame.schema == schema else frame.cast(schema)


def uses_index(files: Sequence[FileEntry], symbols: Sequence[str], lo: dt.datetime,
                  hi: dt.datetime) -> bool:
    """Whether to read by chunk index rather than with a Polars scan.

    The index reads whole row groups (symbol-months) and skips footers: a win unless the
    request takes most of a file's groups and then only a slice of its days (a one-day
    cross-section), where the scan's late materialization (decode the other columns only
    for rows passing the ``ts`` filter) decodes far less. Files without an index: scan.
    """
    wanted = set(symbols)
    for f in files:
        if not f.chunk_index:
            return False
        if (f.min_ts < lo or f.max_ts >= hi) and 2 * len(
                f.row_groups_for(wanted.intersection(f.symbols))) > len(f.row_group_symbols):
            return False
    return True


def read_indexed(
    files: Sequence[FileEntry],
    fetches: Sequence[Fetch],
    symbols: Sequence[str],
    lo: dt.datetime,
    hi: dt.datetime,
    columns: Sequence[str],
    *,
    verify_pages: bool = False,
) -> pl.DataFrame:
    """Bars of ``symbols`` in ``[lo, hi)`` from files with chunk indexes, sorted (symbol, ts).

    Reads exactly the column chunks of the row groups holding the symbols (one ranged read
    per run of adjacent chunks through ``fetches``, one per file) and no footer. Groups
    holding one symbol each are laid out symbol by symbol, file by file, so the result
    needs neither a symbol filter nor a sort; packed groups (daily bars) are filtered and
    sorted.
    """
    wanted = set(symbols)
    picks: list[tuple[str, int, int]] = []  # (first symbol, file position, group)
    reads: list[GroupRead] = []
    single = True
    for i, entry in enumerate(files):
        index = entry.index
        assert index is not None
        groups = entry.row_groups_for(wanted.intersection(entry.symbols))
        single = single and entry.single_symbol_groups(groups)
        picks += [(entry.row_group_symbols[g], len(reads), g) for g in groups]
        reads.append(GroupRead(index, groups, fetches[i]))
    ordered = _time_ordered(files)
    if single and ordered:
        picks.sort()  # symbol by symbol, file by file: already sorted by (symbol, ts)
    if not picks:
        return pl.DataFrame(schema={c: BARS_SCHEMA[c] for c in columns})
    # A one-symbol group's symbol column is known from the index: build it rather than
    # decode ~100k dictionary-encoded strings (the costliest column to read).
    decoded = [c for c in columns if c != "symbol"] if single else list(columns)
    table = read_groups(reads, decoded, order=[(i, g) for _s, i, g in picks],
                        verify_pages=verify_pages)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if single:
        counts = [reads[i].index.rows[g] for _s, i, g in picks]
        which = np.repeat(np.arange(len(picks), dtype=np.int32), counts)
        names = pl.Series("symbol", [s for s, _i, _g in picks], pl.String)
        frame = frame.insert_column(1, names.gather(which)).select(columns)
    conditions = []
    if any(f.min_ts < lo or f.max_ts >= hi for f in files):
        conditions += [pl.col("ts") >= lo, pl.col("ts") < hi]
    if not single:
        conditions.append(pl.col("symbol").is_in(list(wanted)))
    if conditions:
        frame = frame.filter(*conditions)
    if single and ordered:
        return frame
    return frame.sort("symbol", maintain_order=True) if ordered else frame.sort("symbol", "ts")


def _scan_sorted(files: Sequence[FileEntry], scan: pl.LazyFrame) -> pl.DataFrame:
    if _time_ordered(files):
        # Each file is sorted (symbol, ts) and the files follow each other in time, so a
        # stable sort by symbol alone yields (symbol, ts), one key instead of two.
        frame = scan.sort("symbol", maintain_order=True).collect()
    else:
        frame = scan.sort("symbol", "ts").collect()
    return frame
