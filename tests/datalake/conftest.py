"""A small generated dataset shared by the data-layer tests (real files, no mocks)."""

from __future__ import annotations

import datetime as dt

import pytest
from tests.storage.s3_testserver import (  # noqa: F401
    _proxy_server,
    bucket,
    moto_endpoint,
    proxy,
    proxy_url,
    raw_s3,
)

from pitwall_executor.datalake import Catalog, Snapshot, generate_dataset, sample_symbols

# Three months, including the March daylight-saving change in New York.
LAKE_START = dt.date(2024, 2, 1)
LAKE_END = dt.date(2024, 4, 30)
LAKE_SYMBOLS = sample_symbols(20)
LAKE_SEED = 7


@pytest.fixture(scope="session")
def lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Catalog, Snapshot]:
    """Catalog with dataset ``sample`` @v1: 20 symbols, Feb–Apr 2024, one file per month."""
    catalog = Catalog(tmp_path_factory.mktemp("lake"))
    snapshot = generate_dataset(
        catalog, "sample", symbols=LAKE_SYMBOLS, start=LAKE_START, end=LAKE_END, seed=LAKE_SEED
    )
    return catalog, snapshot
