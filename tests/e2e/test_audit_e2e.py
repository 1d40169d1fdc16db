"""Through the real gVisor sandbox: the lookahead audit's verdict (a flag completes the job
unless ``audit_fail``) and byte-identical reruns of a manifest."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import pytest
from tests.e2e.cli_kit import SYMBOLS, pitwall, sample_data_dir

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "engine"))
from audit_strategies import LEAKY  # noqa: E402

SMA = ROOT / "examples" / "sma_crossover.py"
ARGS = ["--symbols", ",".join(SYMBOLS), "--start", "2024-03-04", "--end", "2024-03-08"]

RANDOM_AND_CLOCK = """import datetime, random, time
import numpy as np
import polars as pl
import pitwall


@pitwall.vectorized
def s(bars):
    noise = np.random.rand(bars.height) + random.random() + time.time() % 7
    drift = datetime.datetime.now().minute / 100
    return bars.select("ts", "symbol", weight=pl.Series(noise) / 4 - 0.5 + drift)
"""


@pytest.fixture(autouse=True)
def every_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    """Detection is tested with every planned cut checked: the time budget (which thins
    random cuts on a slow machine) has tests of its own in tests/engine/test_audit.py."""
    monkeypatch.setenv("PITWALL_AUDIT_BUDGET", "0")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_data_dir(tmp_path_factory, end=dt.date(2024, 3, 15))


def run_json(data_dir: Path, strategy: Path, *extra: str) -> dict[str, object]:
    res = pitwall(data_dir, "run", str(strategy), *ARGS, "--json", *extra)
    view: dict[str, object] = json.loads(res.output)
    return view


def artifacts(data_dir: Path, view: dict[str, object]) -> Path:
    return data_dir / "artifacts" / str(view["id"]) / f"attempt-{view['attempt']}"


def write(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "strategy.py"
    path.write_text(source)
    return path


def test_a_leaky_strategy_completes_with_the_audit_flagged(data_dir: Path,
                                                           tmp_path: Path) -> None:
    view = run_json(data_dir, write(tmp_path, LEAKY["next_close"]))
    assert view["status"] == "COMPLETED", view["reason"]
    lookahead = view["metrics"]["lookahead"]  # type: ignore[index]
    assert lookahead["status"] == "flagged" and lookahead["first"]["symbol"] in SYMBOLS
    out = artifacts(data_dir, view)
    stored = json.loads((out / "metrics.json").read_text())["lookahead"]
    assert stored == lookahead
    # next_close peeks one bar: the first difference is at the earliest cut, on its own bar
    assert stored["first"]["ts"] == stored["first"]["cut"] == stored["cuts_checked"][0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["audit"]["status"] == "flagged" and manifest["audit"]["seed"] > 0
    page = (out / "report.html").read_text()
    assert 'class="banner flagged"' in page and "lookahead audit flagged" in page
    assert stored["first"]["symbol"] in page


def test_an_honest_strategy_passes_the_audit(data_dir: Path) -> None:
    view = run_json(data_dir, SMA, "--param", "fast=5", "--param", "slow=60")
    assert view["status"] == "COMPLETED", view["reason"]
    out = artifacts(data_dir, view)
    stored = json.loads((out / "metrics.json").read_text())["lookahead"]
    assert stored["status"] == "no_lookahead_found" and stored["first"] is None
    assert stored["notes"] == [] and stored["independent"] is True
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(stored["cuts_checked"]) == len(manifest["audit"]["cuts"]) > 20
    assert stored["coverage"]["session_end"] >= 1 and stored["coverage"]["random"] >= 20
    page = (out / "report.html").read_text()
    assert 'class="banner no_lookahead_found"' in page and "audit passed" not in page
    assert f"no lookahead found at {len(stored['cuts_checked'])} cuts" in page


def test_audit_fail_turns_a_flag_into_a_failed_job(data_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PITWALL_AUDIT_FAIL", "true")
    view = run_json(data_dir, write(tmp_path, LEAKY["full_sample_zscore"]))
    assert view["status"] == "FAILED"
    assert str(view["reason"]).startswith("lookahead audit flagged: the weight of")
    assert (artifacts(data_dir, view) / "report.html").is_file()  # still there to read


def test_audit_fail_also_fails_a_run_whose_audit_could_not_run(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # every re-run raises (it sees fewer bars than the full run): nothing was checked
    source = LEAKY["next_close"].replace(
        "def s(bars):\n", "def s(bars):\n"
        "    if bars.get_column('ts').max().isoformat() < '2024-03-08T20:59':\n"
        "        raise ValueError('needs the whole week')\n")
    strategy = write(tmp_path, source)
    view = run_json(data_dir, strategy)
    lookahead = view["metrics"]["lookahead"]  # type: ignore[index]
    assert view["status"] == "COMPLETED" and lookahead["status"] == "not_run"
    monkeypatch.setenv("PITWALL_AUDIT_FAIL", "true")
    refused = run_json(data_dir, strategy)
    assert refused["status"] == "FAILED"
    assert str(refused["reason"]).startswith("lookahead audit not run")


def test_the_same_manifest_twice_gives_identical_bytes(data_dir: Path, tmp_path: Path) -> None:
    strategy = write(tmp_path, RANDOM_AND_CLOCK)
    first = run_json(data_dir, strategy, "--seed", "42")
    second = run_json(data_dir, strategy, "--seed", "42")
    assert first["status"] == second["status"] == "COMPLETED", (first["reason"], second["reason"])
    a, b = artifacts(data_dir, first), artifacts(data_dir, second)
    assert (a / "equity.parquet").read_bytes() == (b / "equity.parquet").read_bytes()
    # The results are identical; the audit's cuts are drawn anew from a secret seed each
    # run (recorded in the manifest), so its verdict's cut list is the one part that moves.
    one, two = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    assert one.pop("lookahead")["status"] == two.pop("lookahead")["status"]
    assert one == two
    other = run_json(data_dir, strategy, "--seed", "43")
    assert (artifacts(data_dir, other) / "equity.parquet").read_bytes() != \
        (a / "equity.parquet").read_bytes()  # the seed does reach the strategy
