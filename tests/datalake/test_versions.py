"""Corrections make versions; vacuum keeps pinned ones; diff counts rows per symbol-day."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from pitwall.errors import UnknownDatasetError
from pitwall.models import BacktestSpec
from pitwall_executor.cli import main
from pitwall_executor.datalake import (
    Catalog,
    Snapshot,
    generate_dataset,
    load_bars,
    trading_minutes,
)
from pitwall_executor.datalake.ingest import upsert
from pitwall_executor.datalake.versions import diff, file_pins, job_pins, pin, vacuum
from pitwall_executor.jobs.store import MetadataStore

D = dt.date
SYMS = ["AAPL", "MSFT", "XOM"]


def _age(catalog: Catalog) -> None:
    """Make every data file older than vacuum's grace period."""
    old = dt.datetime.now().timestamp() - 7200
    for p in catalog.root.rglob("*.parquet"):
        os.utime(p, (old, old))


def _correct(catalog: Catalog, snap: Snapshot, day: D, symbol: str) -> Snapshot:
    """A vendor correction: one symbol-day with one changed bar and one bar dropped."""
    bars = load_bars(catalog, snap, [symbol], day, day)
    fixed = bars.with_columns(
        pl.when(pl.int_range(pl.len()) == 5).then(pl.col("close") + 0.01)
        .otherwise(pl.col("close")).alias("close"),
        pl.when(pl.int_range(pl.len()) == 5).then(pl.col("high") + 0.01)
        .otherwise(pl.col("high")).alias("high"),
    ).filter(pl.int_range(pl.len()) != 7)
    return upsert(catalog, "eq", fixed, message=f"correct {symbol} {day}")


@pytest.fixture
def versions(tmp_path: Path) -> tuple[Catalog, list[Snapshot]]:
    catalog = Catalog(tmp_path / "lake")
    v1 = generate_dataset(catalog, "eq", symbols=SYMS, start=D(2024, 1, 2), end=D(2024, 2, 29),
                          seed=3)
    v2 = _correct(catalog, v1, D(2024, 2, 6), "MSFT")
    v3 = _correct(catalog, v2, D(2024, 2, 7), "XOM")
    return catalog, [v1, v2, v3]


def test_a_correction_rewrites_only_its_month_and_old_versions_stay_readable(
    versions: tuple[Catalog, list[Snapshot]],
) -> None:
    catalog, (v1, v2, _) = versions
    assert v2.version == 2 and v2.parent == 1
    assert v1.files[0] == v2.files[0]  # January untouched, shared by hash
    assert v1.files[1].sha256 != v2.files[1].sha256
    assert v2.rows == v1.rows - 1
    old = load_bars(catalog, catalog.snapshot("eq", 1), ["MSFT"], D(2024, 2, 6), D(2024, 2, 6))
    assert old.height == trading_minutes(D(2024, 2, 6), D(2024, 2, 6))


def test_diff_counts_added_changed_removed_per_symbol_and_day(
    versions: tuple[Catalog, list[Snapshot]],
) -> None:
    catalog, _ = versions
    got = diff(catalog, "eq", 1, 3)
    assert got.rows() == [("MSFT", D(2024, 2, 6), 0, 1, 1), ("XOM", D(2024, 2, 7), 0, 1, 1)]
    back = diff(catalog, "eq", 2, 1)
    assert back.rows() == [("MSFT", D(2024, 2, 6), 1, 1, 0)]
    assert diff(catalog, "eq", 2, 2).is_empty()


def test_vacuum_never_deletes_a_pinned_versions_files(
    versions: tuple[Catalog, list[Snapshot]], tmp_path: Path,
) -> None:
    catalog, (v1, v2, v3) = versions
    _age(catalog)
    store = MetadataStore(f"sqlite:///{tmp_path / 'meta.db'}")
    spec = BacktestSpec(dataset="eq", universe=["MSFT"], start=D(2024, 2, 1), end=D(2024, 2, 9))
    store.create_job(spec=spec, researcher="ada", bundle=b"zip", bundle_sha256="a" * 64,
                     data_version=1)
    other = spec.model_copy(update={"dataset": "other"})
    store.create_job(spec=other, researcher="ada", bundle=b"zip", bundle_sha256="b" * 64,
                     data_version=2)
    pinned = job_pins(store, "eq") | file_pins(catalog, "eq")
    assert pinned == {1}  # the job on dataset "other" does not pin eq@v2
    report = vacuum(catalog, "eq", keep=1, pinned=pinned)
    assert report.kept_versions == [1, 3] and report.expired_versions == [2]
    assert report.deleted_files == [v2.files[1].path]  # only v2's February file was its own
    for snap in (v1, v3):
        for f in snap.files:
            assert catalog.file_path("eq", f).is_file()
    assert load_bars(catalog, catalog.snapshot("eq", 1), SYMS, D(2024, 1, 2), D(2024, 2, 29)
                     ).height == v1.rows
    with pytest.raises(UnknownDatasetError, match="no version 2; its versions are 1, 3"):
        catalog.snapshot("eq", 2)
    store.close()


def test_a_pins_file_protects_and_young_files_survive(
    versions: tuple[Catalog, list[Snapshot]],
) -> None:
    catalog, (v1, _, _) = versions
    pin(catalog, "eq", 1, reason="paper results")
    assert file_pins(catalog, "eq") == {1}
    dry = vacuum(catalog, "eq", keep=1, pinned=file_pins(catalog, "eq"), dry_run=True)
    assert dry.expired_versions == [2] and dry.deleted_files == []  # files are too young
    _age(catalog)
    report = vacuum(catalog, "eq", keep=1, pinned=file_pins(catalog, "eq"))
    assert report.kept_versions == [1, 3]
    assert all(catalog.file_path("eq", f).is_file() for f in v1.files)
    unpinned = vacuum(catalog, "eq", keep=1)
    assert unpinned.expired_versions == [1]
    assert not catalog.file_path("eq", v1.files[1]).exists()


def test_cli_diff_and_vacuum(versions: tuple[Catalog, list[Snapshot]], tmp_path: Path) -> None:
    catalog, _ = versions
    env = {"PITWALL_DATA_DIR": str(tmp_path)}
    runner = CliRunner()
    out = runner.invoke(main, ["data", "diff", "eq", "1", "3"], env=env)
    assert out.exit_code == 0, out.output
    assert "MSFT\t2024-02-06\t0\t1\t1" in out.output
    assert "total: 0 added, 2 changed, 2 removed over 2 symbol-days" in out.output
    _age(catalog)
    out = runner.invoke(main, ["data", "vacuum", "eq", "--keep", "2"], env=env)
    assert out.exit_code == 0, out.output
    assert "kept versions [2, 3]" in out.output and "expired [1]" in out.output
