"""Reference data in the lake: listings and corporate actions, versioned with the bars.

Each version may name two reference tables (``snapshot.reference``), stored as Parquet
under ``<root>/<dataset>/reference/<sha256>.parquet`` and counted in the version's content
digest; a bars-only commit carries the previous version's tables forward. Their model is
in ``pitwall.reference`` and docs/reference-data.md.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import polars as pl

from pitwall.errors import DataError
from pitwall.reference import (
    ACTIONS_SCHEMA,
    LISTINGS_SCHEMA,
    check_reference,
    empty_actions,
    empty_listings,
)

if TYPE_CHECKING:
    from pitwall_executor.datalake.catalog import Catalog
    from pitwall_executor.datalake.snapshot import ReferenceFile, Snapshot

Table = Literal["listings", "corporate_actions"]
LISTINGS: Table = "listings"
ACTIONS: Table = "corporate_actions"
_SCHEMAS: dict[str, pl.Schema] = {LISTINGS: LISTINGS_SCHEMA, ACTIONS: ACTIONS_SCHEMA}


@dataclasses.dataclass(frozen=True)
class Reference:
    """The listings and corporate actions of one dataset version (empty if it has none)."""

    listings: pl.DataFrame
    actions: pl.DataFrame

    @classmethod
    def empty(cls) -> Reference:
        """No listings, no actions: bars used as given."""
        return cls(empty_listings(), empty_actions())

    @property
    def is_empty(self) -> bool:
        """Whether the version holds no reference data at all."""
        return self.listings.is_empty() and self.actions.is_empty()


def read_reference(catalog: Catalog, snapshot: Snapshot) -> Reference:
    """The reference tables of ``snapshot``, read with Polars."""
    def table(name: Table) -> pl.DataFrame:
        entry = snapshot.reference.get(name)
        if entry is None:
            return pl.DataFrame(schema=_SCHEMAS[name])
        return pl.read_parquet(catalog.root / snapshot.dataset / entry.path).cast(
            _SCHEMAS[name])

    return Reference(table(LISTINGS), table(ACTIONS))


def _sorted(reference: Reference) -> Reference:
    """One canonical row order, so the same tables always give the same file hashes."""
    return Reference(
        reference.listings.select(LISTINGS_SCHEMA.names()).sort("security_id", "first_day"),
        reference.actions.select(ACTIONS_SCHEMA.names())
        .sort("effective_date", "security_id", "kind"))


def commit_reference(catalog: Catalog, dataset: str, reference: Reference, *,
                     message: str) -> Snapshot:
    """A new version of ``dataset`` with its latest bars and ``reference`` as its tables.

    Actions must name symbols of the listings, and listed symbols must be symbols of the
    bars; otherwise :class:`DataError` says which.
    """
    latest = catalog.snapshot(dataset)
    unknown = sorted(set(reference.listings["symbol"]) - latest.symbols)
    if unknown:
        raise DataError(f"listings name {len(unknown)} symbol(s) without bars in "
                        f"{latest.label}: {', '.join(unknown[:10])}; import their bars first "
                        "or remove them from the listings")
    check_reference(reference.listings, reference.actions)
    canonical = _sorted(reference)
    files: dict[str, ReferenceFile] = {
        LISTINGS: catalog.write_reference(dataset, canonical.listings),
        ACTIONS: catalog.write_reference(dataset, canonical.actions)}
    return catalog.commit(dataset, latest.files, message=message,
                          properties=dict(latest.properties), reference=files)


def _read_table(path: Path, fmt: Literal["csv", "parquet"], table: Table) -> pl.DataFrame:
    """A vendor reference file as typed columns, with ``row`` numbering its data rows."""
    schema = _SCHEMAS[table]
    raw = (pl.read_csv(path, infer_schema=False) if fmt == "csv"
           else pl.read_parquet(path).with_columns(pl.all().cast(pl.String)))
    required = [c for c in schema.names() if c not in ("ratio", "amount", "new_symbol")]
    missing = [c for c in required if c not in raw.columns]
    if missing:
        raise DataError(f"{path}: the {table} file lacks column(s) {', '.join(missing)}; "
                        f"its columns must be {', '.join(schema.names())}")
    raw = raw.with_columns(*[pl.lit(None, pl.String).alias(c) for c in schema.names()
                             if c not in raw.columns])
    typed = raw.with_row_index("row", offset=2 if fmt == "csv" else 1).select(
        "row", *[_parse(c, dtype) for c, dtype in schema.items()])
    bad = _unparsed(raw.with_row_index("row", offset=2 if fmt == "csv" else 1), typed, schema)
    if bad:
        raise DataError(f"{path}: " + "; ".join(bad[:10]) + ". Dates are YYYY-MM-DD, "
                        "numbers plain decimals, delisted true/false")
    return typed


def _parse(column: str, dtype: pl.DataType) -> pl.Expr:
    text = pl.col(column).str.strip_chars()
    if dtype == pl.Date():
        return text.str.to_date("%Y-%m-%d", strict=False).alias(column)
    if dtype == pl.Boolean():
        return text.str.to_lowercase().replace_strict(
            {"true": True, "false": False, "1": True, "0": False}, default=None,
            return_dtype=pl.Boolean).alias(column)
    if dtype == pl.Float64():
        return text.cast(pl.Float64, strict=False).alias(column)
    return pl.when(text != "").then(text).alias(column)


def _unparsed(raw: pl.DataFrame, typed: pl.DataFrame, schema: pl.Schema) -> list[str]:
    """``row N: column 'x' value 'v' is not a …`` for cells given but not parsed."""
    problems = []
    for column, dtype in schema.items():
        if dtype == pl.String():
            continue
        given = raw[column].str.strip_chars().fill_null("") != ""
        failed = typed.filter(given & typed[column].is_null())
        for row in failed["row"]:
            value = raw.filter(pl.col("row") == row)[column].item()
            problems.append(f"row {row}: {column} {value!r} is not a {dtype}")
    return problems


def import_reference(catalog: Catalog, dataset: str, *, listings: Path | None,
                     actions: Path | None, fmt: Literal["csv", "parquet"]) -> Snapshot:
    """Read and check vendor listings and/or corporate actions; commit them as a new version.

    A table not given keeps the dataset's current one. Every problem of the files is
    reported at once (:class:`DataError`), and nothing is committed unless all is clean.
    """
    current = read_reference(catalog, catalog.snapshot(dataset))
    new_listings = _read_table(listings, fmt, LISTINGS) if listings else current.listings
    new_actions = _read_table(actions, fmt, ACTIONS) if actions else current.actions
    source = ", ".join(str(p) for p in (listings, actions) if p)
    check_reference(new_listings, new_actions, source=source)
    reference = Reference(new_listings.drop("row", strict=False),
                          new_actions.drop("row", strict=False))
    return commit_reference(catalog, dataset, reference, message=f"reference from {source}")
