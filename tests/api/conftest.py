"""Fixtures of the API tests: a live API on 127.0.0.1, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from apikit import Api, make_lake, start_api


@pytest.fixture(scope="session")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lake(tmp_path_factory.mktemp("lake"))


@pytest.fixture
def api(tmp_path: Path, lake: Path, db_url: str) -> Iterator[Api]:
    running = start_api(tmp_path, lake, db_url, report_ttl_s=2.0, events_poll_s=0.05)
    try:
        yield running
    finally:
        running.server.stop()
        running.stack.store.close()
