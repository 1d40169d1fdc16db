"""Report artifacts: byte-identical reruns and escaping of strategy-controlled strings."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
from engine_bars import make_bars, make_weights

from pitwall.engine import compute_metrics, run_vectorized, write_report
from pitwall.engine.report import PLOT_DIV_ID
from pitwall.models import Costs

PAYLOAD = "<script>alert('pwned')</script>"
MANIFEST = {
    "bundle_sha256": "ab" * 32,
    "dataset": "us_equities@12",
    "entrypoint": f"evil{PAYLOAD}",
    "parameters": {"fast": 30, "note": PAYLOAD},
    "seed": 7,
    "sdk_version": "0.1.0",
}

SCRIPT = """
import sys
sys.path.insert(0, sys.argv[2])
from pathlib import Path
from test_engine_report import _write
_write(Path(sys.argv[1]))
"""


def _write(out: Path) -> list[Path]:
    bars = make_bars({"A": [(10, 11), (11, 12), (12, 11), (11, 13)],
                      "B": [(5, 5), (5, 6), (6, 6), (6, 5)]})
    weights = make_weights([(0, "A", 0.6), (0, "B", 0.4), (2, "B", -0.2)])
    result = run_vectorized(bars, weights, capital=1e5, costs=Costs(commission_bps=1))
    paths = write_report(out, result=result, metrics=compute_metrics(result), manifest=MANIFEST)
    return [paths.metrics_json, paths.equity_parquet, paths.report_html]


def _digests(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_two_writes_are_byte_identical_even_across_processes(tmp_path: Path) -> None:
    first = _write(tmp_path / "one")
    second = _write(tmp_path / "two")
    assert _digests(first) == _digests(second)
    subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "three"),
                    str(Path(__file__).parent)], check=True)
    third = [tmp_path / "three" / p.name for p in first]
    assert _digests(first) == _digests(third)


def test_artifact_contents(tmp_path: Path) -> None:
    metrics_json, parquet, report = _write(tmp_path)
    text = metrics_json.read_text()
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert data["n_bars"] == 4
    equity = pl.read_parquet(parquet)
    assert equity.columns == ["ts", "equity", "gross_exposure", "net_exposure", "turnover", "cost"]
    assert equity.schema["ts"] == pl.Datetime("us", "UTC")
    assert pq.read_metadata(parquet).metadata is None  # no writer-time key/values
    page = report.read_text()
    assert f'id="{PLOT_DIV_ID}"' in page
    # plotly.js (megabytes) is inlined, nothing is fetched from a CDN
    assert "<script src=" not in page and len(page) > 1_000_000
    assert "us_equities@12" in page and "ab" * 32 in page


def test_strategy_strings_are_escaped(tmp_path: Path) -> None:
    page = _write(tmp_path)[2].read_text()
    assert PAYLOAD not in page
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in page
    assert "evil&lt;script&gt;" in page
