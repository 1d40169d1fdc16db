"""Reading vendor bars (CSV or Parquet) into Pitwall's schema, rejecting bad rows loudly.

Every input row ends up either in the bars or in the rejects with a reason; nothing is
dropped silently. Checks: unparseable or missing values, local times that do not exist or
are ambiguous in the vendor's time zone (daylight saving), OHLC consistency, non-positive
prices, negative volume, duplicate ``(symbol, ts)``, timestamps going backwards. Gaps (a
missing bar where the vendor's own cadence expects one, weekends excepted) are reported,
not rejected: there is no row to reject.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import polars as pl

from pitwall.errors import DataError
from pitwall_executor.datalake.generate import BARS_SCHEMA

Format = Literal["csv", "parquet"]
_PRICES = ("open", "high", "low", "close")
_REQUIRED = ("ts", *_PRICES, "volume")


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """Accepted bars (:data:`BARS_SCHEMA`, sorted), rejected rows with reasons, and gaps."""

    bars: pl.DataFrame
    rejects: pl.DataFrame  # line, reason, then the raw source columns as text
    gaps: pl.DataFrame  # symbol, after, before, missing (bars the cadence expected)
    rows_read: int

    def summary(self) -> dict[str, object]:
        """Counts per outcome and per reject reason (the first reason of each row)."""
        reasons = (self.rejects.select(pl.col("reason").str.split("; ").list.first())
                   .to_series().value_counts(sort=True))
        return {
            "rows_read": self.rows_read,
            "imported": self.bars.height,
            "rejected": self.rejects.height,
            "reject_reasons": dict(zip(reasons["reason"], reasons["count"], strict=True)),
            "gaps": self.gaps.height,
        }


def parse_mapping(text: str) -> dict[str, str]:
    """``"ts=Date,open=Open"`` → ``{"ts": "Date", "open": "Open"}`` (Pitwall name = vendor's)."""
    mapping = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        target, sep, source = item.partition("=")
        if not sep or target not in (*_REQUIRED, "symbol"):
            raise DataError(f"--map item {item!r}: write pitwall_column=VendorColumn with "
                            f"pitwall_column one of {', '.join((*_REQUIRED, 'symbol'))}")
        mapping[target] = source
    return mapping


def _read_raw(path: Path, fmt: Format) -> pl.DataFrame:
    """Every column as text, so a malformed cell becomes a reported reason, not a crash."""
    if fmt == "csv":
        raw = pl.read_csv(path, infer_schema=False)
        first_line = 2  # line 1 is the header
    else:
        raw = pl.read_parquet(path)
        raw = raw.with_columns(pl.all().cast(pl.String))
        first_line = 1
    return raw.with_row_index("line", offset=first_line)


def _typed(raw: pl.DataFrame, mapping: Mapping[str, str], tz: str,
           symbol: str | None) -> tuple[pl.DataFrame, list[pl.Expr]]:
    """The bars columns parsed from the raw text, and one reason expression per check."""
    missing = [c for c in _REQUIRED if c not in mapping]
    absent = sorted(set(mapping.values()) - set(raw.columns))
    if missing or absent:
        raise DataError(f"map every column: missing {missing}; not in the file {absent}. "
                        f"The file has {raw.columns}")
    if symbol is None and "symbol" not in mapping:
        raise DataError("the file has no symbol column mapped; pass --symbol or map symbol=…")
    text = {c: pl.col(src).str.strip_chars() for c, src in mapping.items()}
    local = text["ts"].str.to_datetime(time_unit="us", strict=False)
    typed = raw.select(
        "line",
        local.alias("local"),
        local.dt.replace_time_zone(tz, ambiguous="null", non_existent="null")
        .dt.convert_time_zone("UTC").alias("ts"),
        (text["symbol"] if "symbol" in text else pl.lit(symbol)).alias("symbol"),
        *[text[c].cast(pl.Float64, strict=False).alias(c) for c in _PRICES],
        text["volume"].cast(pl.Float64, strict=False).alias("volume"),
    )
    unparsed = pl.when(pl.col("local").is_null()).then(pl.lit("unparseable timestamp"))
    reasons: list[pl.Expr] = [
        unparsed.when(pl.col("ts").is_null())
        .then(pl.lit(f"local time does not exist or is ambiguous in {tz}"))]
    reasons += [pl.when(pl.col(c).is_null()).then(pl.lit(f"missing or unparseable {c}"))
                for c in (*_PRICES, "volume")]
    reasons.append(pl.when(pl.col("symbol").is_null() | (pl.col("symbol") == ""))
                   .then(pl.lit("missing symbol")))
    return typed, reasons


def _ohlc_reasons() -> list[pl.Expr]:
    o, h, lo, c, v = (pl.col(x) for x in (*_PRICES, "volume"))
    return [
        pl.when(pl.min_horizontal(o, h, lo, c) <= 0).then(pl.lit("non-positive price")),
        pl.when(h < lo).then(pl.lit("high below low")),
        pl.when(h < pl.max_horizontal(o, c)).then(pl.lit("high below open or close")),
        pl.when(lo > pl.min_horizontal(o, c)).then(pl.lit("low above open or close")),
        pl.when(v < 0).then(pl.lit("negative volume")),
        pl.when(v != v.round()).then(pl.lit("fractional volume")),
    ]


def _order_reasons(frame: pl.DataFrame) -> pl.DataFrame:
    """Duplicates and backwards timestamps, per symbol in file order (rows already valid)."""
    first = pl.col("line").min().over("symbol", "ts")
    prev_max = pl.col("ts").cum_max().shift(1).over("symbol")
    prev_line = pl.col("line").shift(1).over("symbol")
    return frame.with_columns(
        pl.when(pl.col("line") != first)
        .then(pl.format("duplicate of line {}", first))
        .when(pl.col("ts") < prev_max)
        .then(pl.format("timestamp goes backwards (after line {})", prev_line))
        .alias("reason")
    )


def _gaps(bars: pl.DataFrame, tz: str) -> pl.DataFrame:
    """Missing bars by the symbol's own median cadence, intervals over a weekend excepted."""
    step = pl.col("ts").diff().over("symbol")
    cadence = step.median().over("symbol")
    local = pl.col("ts").dt.convert_time_zone(tz)
    weekday_prev = local.shift(1).over("symbol").dt.weekday()
    days_between = (local.dt.date() - local.shift(1).over("symbol").dt.date()).dt.total_days()
    # Crosses a weekend if the days between reach past Friday (weekday 5) or wrap the week.
    over_weekend = (weekday_prev + days_between) > 5
    gaps = bars.lazy().sort("symbol", "ts").with_columns(
        after=pl.col("ts").shift(1).over("symbol"),
        missing=(step / cadence).round() - 1,
        is_gap=(step > cadence * 1.5) & ~over_weekend,
    ).filter(pl.col("is_gap")).select("symbol", "after", pl.col("ts").alias("before"),
                                      pl.col("missing").cast(pl.Int64))
    return gaps.collect()


def adjust(bars: pl.DataFrame, factors_path: Path, tz: str) -> pl.DataFrame:
    """Back-adjust prices (x) and volume (/) by the product of later factors.

    ``factors_path`` is a CSV ``date,factor[,symbol]``: a factor applies to the bars dated
    strictly before its date (a 2:1 split on D is ``D,0.5``); without a symbol column, to
    every symbol.
    """
    factors = pl.read_csv(factors_path, try_parse_dates=True)
    if not {"date", "factor"} <= set(factors.columns):
        raise DataError(f"{factors_path}: expected columns date,factor[,symbol]; "
                        f"got {factors.columns}")
    by = ["symbol"] if "symbol" in factors.columns else None
    cum = (factors.with_columns(pl.col("date").cast(pl.Date))
           .sort([*(by or []), "date"], descending=True)
           .with_columns(pl.col("factor").cum_prod().over(by or pl.lit(1)).alias("k"))
           .sort([*(by or []), "date"]))
    keyed = bars.with_columns(pl.col("ts").dt.convert_time_zone(tz).dt.date().alias("date"))
    joined = keyed.sort("date").join_asof(cum.select([*(by or []), "date", "k"]), on="date",
                                          by=by, strategy="forward", allow_exact_matches=False)
    k = pl.col("k").fill_null(1.0)
    return (joined.with_columns(*[(pl.col(c) * k).round(6) for c in _PRICES],
                                (pl.col("volume") / k).round())
            .drop("date", "k").sort("symbol", "ts"))


def import_bars(path: Path, *, fmt: Format, mapping: Mapping[str, str], tz: str,
                symbol: str | None = None, adjust_factors: Path | None = None) -> ImportResult:
    """Read, validate and convert a vendor file; see the module docstring for the checks."""
    raw = _read_raw(path, fmt)
    typed, reasons = _typed(raw, mapping, tz, symbol)
    checked = typed.with_columns(
        pl.concat_str(reasons + _ohlc_reasons(), separator="; ", ignore_nulls=True)
        .alias("reason"))
    checked = checked.with_columns(pl.when(pl.col("reason") != "").then("reason"))
    valid = _order_reasons(checked.filter(pl.col("reason").is_null()).drop("reason"))
    reasons_by_line = pl.concat([checked.filter(pl.col("reason").is_not_null())
                                 .select("line", "reason"),
                                 valid.filter(pl.col("reason").is_not_null())
                                 .select("line", "reason")])
    rejects = (reasons_by_line.join(raw, on="line", how="left").sort("line"))
    bars = (valid.filter(pl.col("reason").is_null())
            .select("ts", "symbol", *_PRICES, "volume"))
    if adjust_factors is not None:
        bars = adjust(bars, adjust_factors, tz)
    bars = bars.with_columns(pl.col("volume").cast(pl.Int64)).sort("symbol", "ts")
    bars = bars.select(BARS_SCHEMA.names()).cast(BARS_SCHEMA)
    return ImportResult(bars=bars, rejects=rejects, gaps=_gaps(bars, tz),
                        rows_read=raw.height)
