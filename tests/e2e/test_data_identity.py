"""Data identity by content: two lakes can both hold a ``sample@v1``; a run records the
digest of the bytes it read, and repeating it where the name holds other bytes is refused
with a message naming both digests (the notebooks' private stack and the lab's once held
different prices under the same name)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from tests.e2e.cli_kit import SYMBOLS, pitwall

from pitwall.errors import DataMismatchError
from pitwall.models import BacktestSpec
from pitwall_executor.config import load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
SMA = ROOT / "examples" / "sma_crossover.py"


def lake(factory: pytest.TempPathFactory, seed: int) -> Path:
    root = factory.mktemp(f"lake-{seed}")
    root.chmod(0o755)
    generate_dataset(Catalog(root / "lake"), "sample", symbols=SYMBOLS,
                     start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 8), seed=seed)
    return root


def test_a_rerun_on_other_bytes_under_the_same_name_is_refused(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    first, other = lake(tmp_path_factory, 11), lake(tmp_path_factory, 12)
    res = pitwall(first, "run", str(SMA), "--symbols", ",".join(SYMBOLS), "--start",
                  "2024-03-04", "--end", "2024-03-08", "--param", "fast=5", "--param",
                  "slow=60", "--no-audit", "--json")
    view = json.loads(res.output)
    assert view["status"] == "COMPLETED", view["reason"]
    spec = BacktestSpec.model_validate(view["spec"])
    digest = Catalog(first / "lake").snapshot("sample", 1).content_digest
    here = Catalog(other / "lake").snapshot("sample", 1).content_digest
    assert spec.version == 1 and spec.data_digest == digest != here
    manifest = json.loads((first / "artifacts" / view["id"] / "attempt-1" /
                           "manifest.json").read_text())
    assert manifest["data"]["digest"] == digest

    bundle = Stack.from_config(load_config(data_dir=first)).store.bundle(view["bundle_sha256"])
    elsewhere = Stack.from_config(load_config(data_dir=other))
    with pytest.raises(DataMismatchError) as refused:
        elsewhere.submit(spec, bundle, researcher="r")
    message = str(refused.value)
    assert digest in message and here in message and "sample@v1" in message
    assert elsewhere.store.list_jobs(limit=5) == []  # nothing half-written

    # The same bytes under the same name: the rerun is accepted and pinned to them.
    again = Stack.from_config(load_config(data_dir=first))
    job = again.submit(spec, bundle, researcher="r")
    assert again.store.get(job).spec.data_digest == digest
