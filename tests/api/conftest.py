"""Fixtures of the API tests: a live API on 127.0.0.1, on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apikit import Api, StartApi, make_lake, start_api


@pytest.fixture(scope="session")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_lake(tmp_path_factory.mktemp("lake"))


@pytest.fixture
def live_api(tmp_path: Path, lake: Path) -> Iterator[StartApi]:
    """``live_api(db_url=…, workers=…, **app_options)``: start a live API on a fresh data
    dir (SQLite in ``tmp_path`` unless ``db_url`` says otherwise); stopped after the test."""
    started: list[Api] = []

    def start(db_url: str | None = None, **options: Any) -> Api:
        assert not started, "one live API per test: they share tmp_path/data"
        running = start_api(tmp_path, lake, db_url or f"sqlite:///{tmp_path}/pitwall.db",
                            **options)
        started.append(running)
        return running

    yield start
    for running in started:
        running.server.stop()
        running.stack.store.close()


@pytest.fixture
def api(live_api: StartApi, db_url: str) -> Api:
    return live_api(db_url, report_ttl_s=2.0, events_poll_s=0.05)
