"""Every class of leak the lookahead audit must catch, through the real ``pitwall run``
path in gVisor (the main run in one sandbox, the audit's re-runs in a fresh one), on
date ranges of several lengths, multiples of 5 days included; and honest strategies of
many shapes never flagged."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest
from tests.e2e.cli_kit import pitwall

from pitwall_executor.datalake.catalog import Catalog, generate_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from audit_strategies import HONEST, SPARSE, STATEFUL

pytestmark = pytest.mark.sandbox

SYMBOLS = ["AAPL", "MSFT"]
START = dt.date(2024, 1, 2)
LEAKS = {**SPARSE, **STATEFUL}


@pytest.fixture(autouse=True)
def every_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """Detection is tested with every planned cut checked: the time budget (which thins
    random cuts on a slow machine) has tests of its own in tests/engine/test_audit.py."""
    monkeypatch.setenv("PITWALL_AUDIT_BUDGET", "0")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit-leaks")
    root.chmod(0o755)
    generate_dataset(Catalog(root / "lake"), "sample", symbols=SYMBOLS, start=START,
                     end=dt.date(2024, 2, 29), seed=13)
    return root


def run(data_dir: Path, tmp_path: Path, source: str, days: int) -> dict[str, object]:
    strategy = tmp_path / "strategy.py"
    strategy.write_text(source)
    end = START + dt.timedelta(days=days - 1)
    res = pitwall(data_dir, "run", str(strategy), "--symbols", ",".join(SYMBOLS), "--start",
                  START.isoformat(), "--end", end.isoformat(), "--json")
    view: dict[str, object] = json.loads(res.output)
    assert view["status"] == "COMPLETED", view["reason"]
    lookahead = view["metrics"]["lookahead"]  # type: ignore[index]
    assert isinstance(lookahead, dict)
    return lookahead


@pytest.mark.parametrize("days", [10, 21, 30])
@pytest.mark.parametrize("name", sorted(LEAKS))
def test_every_leak_class_is_flagged_through_pitwall_run(data_dir: Path, tmp_path: Path,
                                                         name: str, days: int) -> None:
    verdict = run(data_dir, tmp_path, LEAKS[name], days)
    assert verdict["status"] == "flagged", verdict["statement"]
    assert str(verdict["statement"]).startswith("lookahead audit flagged")


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_shapes_are_not_flagged_through_pitwall_run(data_dir: Path, tmp_path: Path,
                                                           name: str) -> None:
    verdict = run(data_dir, tmp_path, HONEST[name], 15)
    assert verdict["status"] == "no_lookahead_found", verdict["statement"]
    assert verdict["coverage"]["random"] >= 20  # type: ignore[index]
