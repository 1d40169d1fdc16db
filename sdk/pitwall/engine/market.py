"""Bars as a dense cube for the event-driven engine (trusted side).

``data[t, f, s]`` is field ``f`` (:data:`FIELDS`, then any extra fields of the run, e.g.
the point-in-time adjusted :data:`ADJUSTED_FIELDS`) of symbol ``s`` at timestamp ``t``;
``NaN`` where a symbol has no bar. One C-contiguous float64 block, so the cross-section
at ``t`` (and a run of timestamps ``a:b``) is one slice: the feeder writes it to the
channel without copying, and a local run hands the strategy views of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from pitwall.errors import DataError
from pitwall.reference import ADJUSTED_COLUMNS

FIELDS = ("open", "high", "low", "close", "volume")
CLOSE = FIELDS.index("close")
#: The adjusted prices a run on reference data adds (docs/reference-data.md §5, §7).
ADJUSTED_FIELDS = tuple(f"adj_{c}" for c in ADJUSTED_COLUMNS)


@dataclass(frozen=True, eq=False)
class Market:
    """Timestamps (µs since the epoch, UTC, increasing), symbols, and the data cube."""

    ts: npt.NDArray[np.int64]
    symbols: tuple[str, ...]
    data: npt.NDArray[np.float64]
    fields: tuple[str, ...] = FIELDS  # the cube's field axis: FIELDS first, then extras

    @classmethod
    def from_bars(cls, bars: pl.DataFrame, symbols: Sequence[str] | None = None, *,
                  extra: Sequence[str] = ()) -> Market:
        """Pivot long bars (``ts, symbol, open, high, low, close, volume``) into a cube.

        ``symbols`` fixes the symbol order (default: sorted names found in ``bars``);
        ``extra`` names further numeric columns of ``bars`` that follow :data:`FIELDS`.
        """
        fields = (*FIELDS, *extra)
        missing = [c for c in ("ts", "symbol", *fields) if c not in bars.columns]
        if missing:
            raise DataError(f"bars lack the columns {missing}; pass ts, symbol and OHLCV")
        if bars.height == 0:
            raise DataError("no bars to run on; widen the date range or the universe")
        names = tuple(symbols) if symbols is not None else tuple(
            sorted(bars.get_column("symbol").unique().to_list()))
        code = bars.get_column("symbol").cast(pl.Enum(list(names)), strict=False)
        if code.null_count():
            raise DataError("bars hold a symbol outside the universe; filter them first")
        si = code.to_physical().to_numpy().astype(np.intp)
        ts_all = bars.get_column("ts").cast(pl.Datetime("us", "UTC")).cast(pl.Int64).to_numpy()
        ts = np.unique(ts_all)
        ti = np.searchsorted(ts, ts_all)
        data = np.full((len(ts), len(fields), len(names)), np.nan)
        for f, name in enumerate(fields):
            data[ti, f, si] = bars.get_column(name).cast(pl.Float64).to_numpy()
        return cls(ts=ts, symbols=names, data=data, fields=fields)

    def __len__(self) -> int:
        return len(self.ts)

    def last_close(self) -> npt.NDArray[np.float64]:
        """Close forward-filled along time, 0 before a symbol's first bar: shape (t, s)."""
        close = self.data[:, CLOSE, :]
        idx = np.where(np.isnan(close), 0, np.arange(len(close))[:, None])
        np.maximum.accumulate(idx, axis=0, out=idx)
        filled = np.take_along_axis(close, idx, axis=0)
        return np.nan_to_num(filled, nan=0.0)
