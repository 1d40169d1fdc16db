"""Fixtures of the server-extension tests: a Jupyter server with ``pitwall_server`` on
the embedded stack (SQLite, the real gVisor sandbox) over a small generated lake."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from pitwall_executor.datalake.catalog import Catalog, generate_dataset


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pitwall-jp")
    root.chmod(0o755)
    generate_dataset(Catalog(root / "lake"), "sample", symbols=["AAPL", "MSFT"],
                     start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 15), seed=5)
    return root


@pytest.fixture
def jp_server_config(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("PITWALL_DATA_DIR", str(data_dir))
    monkeypatch.setenv("PITWALL_DB_URL", f"sqlite:///{data_dir}/pitwall.db")
    monkeypatch.delenv("PITWALL_API_URL", raising=False)
    monkeypatch.delenv("PITWALL_TOKEN", raising=False)
    return {"ServerApp": {"jpserver_extensions": {"pitwall_server": True}}}
