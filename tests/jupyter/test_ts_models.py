"""The labextension's TypeScript types are generated from the pydantic wire models."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_typescript_models_are_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("gen_ts_models",
                                                  ROOT / "scripts" / "gen_ts_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rendered = module.render()
    assert "export interface BacktestSpec {" in rendered and "export type JobStatus" in rendered
    assert (ROOT / "labextension" / "src" / "models.ts").read_text() == rendered, (
        "labextension/src/models.ts is stale: run .venv/bin/python scripts/gen_ts_models.py")
