"""``pitwall run --no-audit`` through the real gVisor sandbox: the spec says so, the runner
re-runs nothing and the job completes without a verdict, even for a leaky strategy."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from audit_strategies import LEAKY
from tests.e2e.cli_kit import SYMBOLS, pitwall, sample_data_dir

pytestmark = pytest.mark.sandbox
ARGS = ["--symbols", ",".join(SYMBOLS), "--start", "2024-03-04", "--end", "2024-03-05"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_data_dir(tmp_path_factory, end=dt.date(2024, 3, 6))


def _run(data_dir: Path, strategy: Path, *extra: str) -> dict[str, object]:
    res = pitwall(data_dir, "run", str(strategy), *ARGS, "--json", *extra)
    view: dict[str, object] = json.loads(res.output)
    return view


def test_no_audit_skips_the_lookahead_audit(data_dir: Path, tmp_path: Path) -> None:
    strategy = tmp_path / "strategy.py"
    strategy.write_text(LEAKY["next_close"])
    audited = _run(data_dir, strategy)
    skipped = _run(data_dir, strategy, "--no-audit")
    assert audited["status"] == skipped["status"] == "COMPLETED", skipped["reason"]
    assert audited["spec"]["audit"] is True  # type: ignore[index]
    assert audited["metrics"]["lookahead"]["status"] == "flagged"  # type: ignore[index]
    assert skipped["spec"]["audit"] is False  # type: ignore[index]
    assert skipped["metrics"]["lookahead"] is None  # type: ignore[index]
    out = data_dir / "artifacts" / str(skipped["id"]) / f"attempt-{skipped['attempt']}"
    assert json.loads((out / "metrics.json").read_text())["lookahead"] is None
    assert "lookahead audit flagged" not in (out / "report.html").read_text()
    # same trusted numbers: the audit only re-runs, it never changes the result
    assert skipped["metrics"]["final_equity"] == audited["metrics"]["final_equity"]  # type: ignore[index]
