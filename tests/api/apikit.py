"""Helpers of the API tests: a live API on 127.0.0.1 over a real store and a real dataset."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from pitwall.bundle import build_bundle
from pitwall.models import JobStatus, Metrics
from pitwall_executor.config import Config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.jobs.researchers import create_researcher
from pitwall_executor.jobs.schema import bundles, jobs
from pitwall_executor.orchestration.embedded import EmbeddedServer
from pitwall_executor.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ["AAPL", "MSFT", "AMZN"]
STRATEGY = ("import polars as pl\nimport pitwall\n\n@pitwall.vectorized\n"
            "def s(bars):\n    return bars.select('ts', 'symbol', weight=pl.lit(0.0))\n")


def make_lake(root: Path) -> Path:
    """A small real dataset ``sample`` (3 symbols, March 2024)."""
    root.chmod(0o755)
    generate_dataset(Catalog(root), "sample", symbols=SYMBOLS, start=dt.date(2024, 3, 1),
                     end=dt.date(2024, 3, 29), seed=11)
    return root


def spec_json(**overrides: Any) -> str:
    spec: dict[str, Any] = {"dataset": "sample", "universe": ["AAPL", "MSFT"],
                            "start": "2024-03-04", "end": "2024-03-08"}
    spec.update(overrides)
    return json.dumps(spec)


def bundle_bytes(source: str = STRATEGY) -> bytes:
    return build_bundle({"strategy.py": source}, entrypoint="strategy.py")


@dataclass
class Api:
    """A running API, its stack, and a token per researcher."""

    server: EmbeddedServer
    stack: Stack
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def get(self, path: str, who: str = "alice", **kw: Any) -> requests.Response:
        return requests.get(self.url + path, headers=self.headers(who), timeout=10, **kw)

    def post(self, path: str, who: str = "alice", **kw: Any) -> requests.Response:
        return requests.post(self.url + path, headers=self.headers(who), timeout=10, **kw)

    def submit(self, who: str = "alice", spec: str | None = None,
               bundle: bytes | None = None) -> requests.Response:
        files = {"bundle": ("bundle.zip", bundle_bytes() if bundle is None else bundle,
                            "application/zip"),
                 "spec": ("spec.json", spec_json() if spec is None else spec,
                          "application/json")}
        return self.post("/v1/backtests", who, files=files)

    def counts(self) -> tuple[int, int]:
        """(job rows, bundle rows) in the store."""
        with self.stack.store.engine.connect() as conn:
            n_jobs = conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one()
            n_bundles = conn.execute(sa.select(sa.func.count()).select_from(bundles)).scalar_one()
        return int(n_jobs), int(n_bundles)

    def files(self) -> set[str]:
        """Every file under the data dir, except the database and the API secret."""
        root = self.stack.config.data_dir
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()
                and not p.name.startswith("pitwall.db") and p.name != "api-secret"}

    def complete(self, job_id: str, *, report: bool = True) -> None:
        """Drive a job to COMPLETED through the real store, with a report and a log file."""
        store = self.stack.store
        attempt = store.start_attempt(job_id, "test-worker")
        assert attempt is not None
        out = self.stack.artifacts.attempt_dir(job_id, attempt)
        (out / "log.txt").write_text("hello from the strategy\n")
        names = ["log.txt"]
        if report:
            (out / "report.html").write_text(f"<html>report of {job_id}</html>")
            names.append("report.html")
        rows = [self.stack.artifacts.describe(out / n) for n in names]
        metrics = Metrics(total_return=0.0, cagr=0.0, annual_volatility=0.0, sharpe=0.0,
                          sortino=0.0, max_drawdown=0.0, turnover=0.0, exposure=0.0, n_days=5,
                          n_bars=1950, final_equity=1e6)
        assert store.finish(job_id, attempt, JobStatus.COMPLETED, metrics=metrics,
                            artifact_rows=rows)


StartApi = Callable[..., Api]  # the live_api fixture of conftest.py


def start_api(tmp_path: Path, lake: Path, db_url: str, *, workers: int = 0,
              **app_options: Any) -> Api:
    """An API on a fresh data dir with researchers alice, bob and the admin root."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(0o755)
    cfg = Config(data_dir=data_dir, db_url=db_url, lake_url=str(lake), max_bundle_mb=1)
    stack = Stack.from_config(cfg)
    tokens = {name: create_researcher(stack.store, name, admin=name == "root")
              for name in ("alice", "bob", "root")}
    server = EmbeddedServer(stack, workers=workers, **app_options).start()
    return Api(server=server, stack=stack, tokens=tokens)
