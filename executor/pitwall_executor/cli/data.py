"""``pitwall data generate | versions | diff | vacuum | pin | import | import-reference``:
datasets, their versions and vendor imports (``push`` and ``cache`` are in ``lake.py``)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from pitwall.errors import PitwallError
from pitwall_executor.cli.app import config_of

if TYPE_CHECKING:
    from pitwall_executor.datalake.catalog import Catalog


def _catalog(ctx: click.Context) -> Catalog:
    from pitwall_executor.datalake.catalog import Catalog

    return Catalog(config_of(ctx).lake_dir)


@click.command("diff")
@click.argument("dataset")
@click.argument("v1", type=int)
@click.argument("v2", type=int)
@click.pass_context
def data_diff(ctx: click.Context, dataset: str, v1: int, v2: int) -> None:
    """Rows added / changed / removed from V1 to V2 of DATASET, per symbol and day."""
    from pitwall_executor.datalake.versions import diff

    try:
        table = diff(_catalog(ctx), dataset, v1, v2)
    except PitwallError as exc:
        raise click.ClickException(str(exc)) from exc
    if table.is_empty():
        click.echo(f"{dataset}@v{v1} and @v{v2} hold the same bars")
        return
    click.echo("symbol\tday\tadded\tchanged\tremoved")
    for row in table.iter_rows():
        click.echo("\t".join(map(str, row)))
    totals = table.select("added", "changed", "removed").sum().row(0)
    click.echo(f"total: {totals[0]} added, {totals[1]} changed, {totals[2]} removed "
               f"over {table.height} symbol-days")


@click.command("vacuum")
@click.argument("dataset")
@click.option("--keep", type=click.IntRange(1), required=True,
              help="Keep this many latest versions (plus every pinned one).")
@click.option("--dry-run", is_flag=True, help="Show what would go; delete nothing.")
@click.pass_context
def data_vacuum(ctx: click.Context, dataset: str, keep: int, dry_run: bool) -> None:
    """Expire old versions of DATASET and delete files no kept version lists.

    Versions referenced by any job in the metadata store, or listed in the dataset's pins
    file (`pitwall data pin`), are always kept.
    """
    from pitwall_executor.datalake.versions import file_pins, job_pins, vacuum
    from pitwall_executor.jobs.store import MetadataStore

    catalog = _catalog(ctx)
    store = MetadataStore(config_of(ctx).database_url)
    try:
        pinned = job_pins(store, dataset) | file_pins(catalog, dataset)
        report = vacuum(catalog, dataset, keep=keep, pinned=pinned, dry_run=dry_run)
    except PitwallError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    verb = "would expire" if dry_run else "expired"
    click.echo(f"{dataset}: kept versions {report.kept_versions} "
               f"(pinned: {sorted(pinned) or 'none'}); {verb} {report.expired_versions}; "
               f"{len(report.deleted_files)} files, {report.freed_bytes / 1e6:.1f} MB freed")


@click.command("pin")
@click.argument("dataset")
@click.argument("version", type=int)
@click.option("--reason", default="", help="Why it must stay (kept as a comment).")
@click.pass_context
def data_pin(ctx: click.Context, dataset: str, version: int, reason: str) -> None:
    """Protect VERSION of DATASET from vacuum (adds it to the pins file)."""
    from pitwall_executor.datalake.versions import pin, pins_path

    catalog = _catalog(ctx)
    try:
        pin(catalog, dataset, version, reason)
    except PitwallError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"pinned {dataset}@v{version} in {pins_path(catalog, dataset)}")


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dataset", required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), required=True)
@click.option("--map", "mapping", required=True,
              help="pitwall=Vendor columns, e.g. ts=Date,open=Open,high=High,low=Low,"
                   "close=Close,volume=Volume[,symbol=Ticker].")
@click.option("--tz", default="UTC", show_default=True,
              help="Time zone of naive vendor timestamps, e.g. America/New_York.")
@click.option("--symbol", default=None, help="Symbol of every row when the file has none.")
@click.option("--adjust", "factors", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None, help="CSV date,factor[,symbol] to back-adjust.")
@click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write rejected rows [FILE.rejects.csv].")
@click.pass_context
def data_import(ctx: click.Context, file: Path, dataset: str, fmt: Literal["csv", "parquet"],
                mapping: str, tz: str, symbol: str | None, factors: Path | None,
                rejects: Path | None) -> None:
    """Import vendor bars from FILE into DATASET as a new version; report every reject."""
    from pitwall_executor.datalake.importer import import_bars, parse_mapping
    from pitwall_executor.datalake.ingest import upsert

    rejects = rejects or file.with_name(file.name + ".rejects.csv")
    try:
        result = import_bars(file, fmt=fmt, mapping=parse_mapping(mapping), tz=tz,
                             symbol=symbol, adjust_factors=factors)
        result.rejects.write_csv(rejects)
        summary = result.summary()
        rejects.with_suffix(".summary.json").write_text(json.dumps(summary, indent=1))
        snap = upsert(_catalog(ctx), dataset, result.bars,
                      message=f"import {file.name}: {result.bars.height} rows",
                      properties={"import": {"file": file.name, **summary}})
    except PitwallError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{file.name}: read {summary['rows_read']}, imported {summary['imported']}, "
               f"rejected {summary['rejected']} {summary['reject_reasons'] or ''}, "
               f"gaps {summary['gaps']}")
    click.echo(f"rejects: {rejects}")
    click.echo(f"dataset {snap.label}: {snap.rows:,} bars in {len(snap.files)} files")


@click.command("import-reference")
@click.option("--dataset", required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), required=True)
@click.option("--listings", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="security_id,symbol,first_day,last_day,delisted")
@click.option("--actions", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="security_id,symbol,kind,announce_date,effective_date,"
                                 "ratio,amount,new_symbol")
@click.pass_context
def data_import_reference(ctx: click.Context, dataset: str, fmt: Literal["csv", "parquet"],
                          listings: Path | None, actions: Path | None) -> None:
    """Import listings and/or corporate actions into DATASET as a new version.

    The bars stay as they are; a table not given keeps the current one. Every problem is
    listed and nothing is committed unless both tables are clean (docs/reference-data.md).
    """
    from pitwall_executor.datalake.reference import import_reference, read_reference

    if listings is None and actions is None:
        raise click.UsageError("give --listings, --actions or both")
    catalog = _catalog(ctx)
    try:
        snap = import_reference(catalog, dataset, listings=listings, actions=actions, fmt=fmt)
    except PitwallError as exc:
        raise click.ClickException(str(exc)) from exc
    ref = read_reference(catalog, snap)
    click.echo(f"dataset {snap.label}: {ref.listings.height} listings, "
               f"{ref.actions.height} corporate actions")


@click.group("data")
def data() -> None:
    """Datasets: generate sample bars, list versions."""


@data.command("generate")
@click.option("--dataset", default="sample", show_default=True)
@click.option("--symbols", "n_symbols", type=click.IntRange(1, 10_000), default=20,
              show_default=True)
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), required=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--corporate-events", is_flag=True,
              help="Add synthetic listings, delistings, splits, dividends and renames "
                   "(unadjusted bars plus reference data; docs/reference-data.md).")
@click.pass_context
def data_generate(ctx: click.Context, dataset: str, n_symbols: int, start: dt.datetime,
                  end: dt.datetime, seed: int, corporate_events: bool) -> None:
    """Write deterministic synthetic 1-minute bars as a new dataset version (reused if equal)."""
    from pitwall_executor.datalake.catalog import Catalog, generate_dataset
    from pitwall_executor.datalake.generate import sample_symbols

    if end < start:
        raise click.BadParameter(f"--end {end:%Y-%m-%d} is before --start {start:%Y-%m-%d}")
    from tqdm import tqdm

    catalog = Catalog(config_of(ctx).lake_dir)
    # disable=None: a progress bar on a terminal, nothing in logs and CI.
    with tqdm(unit="bars", unit_scale=True, file=sys.stderr, desc=dataset, disable=None) as bar:

        def advance(rows: int) -> None:
            bar.update(rows)

        snap = generate_dataset(catalog, dataset, symbols=sample_symbols(n_symbols),
                                start=start.date(), end=end.date(), seed=seed,
                                progress=advance, corporate_events=corporate_events)
    rows = sum(f.rows for f in snap.files)
    click.echo(f"dataset {dataset}@v{snap.version}: {len(snap.symbols)} symbols, {rows:,} bars, "
               f"{len(snap.files)} files in {catalog.root / dataset}")
    if snap.reference:
        counts = ", ".join(f"{f.rows} {name}" for name, f in sorted(snap.reference.items()))
        click.echo(f"reference data: {counts}")


@data.command("versions")
@click.argument("dataset")
@click.pass_context
def data_versions(ctx: click.Context, dataset: str) -> None:
    """List the versions of DATASET."""
    from pitwall_executor.datalake.catalog import Catalog

    try:
        infos = Catalog(config_of(ctx).lake_dir).versions(dataset)
    except PitwallError as exc:
        raise click.ClickException(str(exc)) from exc
    for info in infos:
        click.echo(f"v{info.version}\t{info.created_at}\t{info.message}")


for _command in (data_diff, data_vacuum, data_pin, data_import, data_import_reference):
    data.add_command(_command)
