"""The red-team harness: hostile strategies through the real job path, a benign one beside.

Two stacks share one deployment (data dir, SQLite store, lake, runsc root) with their
own in-process queues, so the attack worker and the benign worker never steal each
other's jobs. The benign worker runs a fixed strategy in a loop on its own thread for
the whole session; ``test_zz_benign.py`` checks every one of those runs completed with
the metrics of the same job run alone. Every attack is checked for leftovers on the
host (runsc container, process, mount, cgroup, job dir) once its job has ended.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pitwall.bundle import build_bundle
from pitwall.models import BacktestSpec, JobView, Limits, Metrics
from pitwall_executor.config import load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.orchestration.worker import Worker
from pitwall_executor.sandbox.gvisor import RUNSC
from pitwall_executor.stack import Stack

SYMBOLS = ["AAA", "BBB"]
START, END = dt.date(2024, 3, 4), dt.date(2024, 3, 6)  # the lake runs to 2024-03-15
FAST = Limits(timeout_s=20, memory_mb=256, pids=64, scratch_mb=16, output_mb=4, log_kb=64)
SECRET = "pitwall-redteam-secret-value"
HEADER = "import os, sys, socket, time\nimport polars as pl\nimport pitwall\n\n"

BENIGN = HEADER + '''
@pitwall.vectorized
def s(bars):
    fast = pl.col("close").rolling_mean(5).over("symbol")
    slow = pl.col("close").rolling_mean(30).over("symbol")
    return bars.select("ts", "symbol",
                       weight=pl.when(fast > slow).then(0.5).otherwise(-0.25).fill_null(0.0))
'''


@dataclass
class Attack:
    """A finished attack job: its view, its log, and what the host looked like after."""

    view: JobView
    log: str
    leftovers: list[str]

    @property
    def reason(self) -> str:
        return str(self.view.reason or "")

    def probe(self, name: str) -> str:
        """The result line ``PROBE name: ...`` the strategy printed to its log."""
        for line in self.log.splitlines():
            if line.startswith(f"PROBE {name}: "):
                return line.removeprefix(f"PROBE {name}: ")
        raise AssertionError(f"probe {name!r} did not report; log tail: {self.log[-2000:]}")


@dataclass
class Env:
    root: Path
    attacks: Stack
    benign: Stack
    reference: JobView
    audit: bool = False  # attacks also run through the lookahead audit's re-run sandbox
    benign_views: list[JobView] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def spec(self, limits: dict[str, Any] | None = None, **params: Any) -> BacktestSpec:
        return BacktestSpec(dataset="sample", universe=SYMBOLS, start=START, end=END,
                            params=params, audit=self.audit,
                            limits=FAST.model_copy(update=limits or {}))

    def run(self, body: str, *, limits: dict[str, Any] | None = None, header: str = HEADER,
            **params: Any) -> Attack:
        """Submit ``body`` as a strategy bundle, run it on the attack worker, inspect."""
        bundle = build_bundle({"strategy.py": header + body}, entrypoint="strategy.py")
        job_id = self.attacks.submit(self.spec(limits, **params), bundle, researcher="redteam")
        assert Worker(self.attacks, name="attacker").run_one(timeout=5) == job_id
        view = self.attacks.store.get(job_id)
        out_dir = self.attacks.config.artifacts_dir / job_id / f"attempt-{view.attempt}"
        log_path = out_dir / "log.txt"
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        return Attack(view, log, settled_leftovers(self, job_id))


def results(metrics: Metrics | None) -> Metrics | None:
    """The figures a run produced, without the lookahead audit's verdict (whose cuts are
    drawn anew each run, and which a run without the audit lacks)."""
    return None if metrics is None else metrics.model_copy(update={"lookahead": None})


def job_leftovers(env: Env, job_id: str) -> list[str]:
    """What a finished job could have left on the host (by its id in container names)."""
    # As GVisorBackend names a container: pitwall-<owner pid>-<start>-<slug[:32]>-<random>.
    slug = re.sub(r"[^A-Za-z0-9_.-]", "-", job_id)[:32]
    runsc_root = env.root / "sandbox" / "runsc"
    found: list[str] = []
    listing = subprocess.run([RUNSC, "--root", str(runsc_root), "list", "-quiet"],
                             capture_output=True, text=True, check=False).stdout.split()
    found += [f"container {c}" for c in listing if slug in c]
    found += [f"state {p.name}" for p in runsc_root.glob(f"*{slug}*")]
    found += [f"bundle {p.name}" for p in (env.root / "sandbox" / "jobs").glob(f"*{slug}*")]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if slug in cmd:
                found.append(f"process {proc.name}: {cmd[:120]}")
    found += [f"mount {ln}" for ln in Path("/proc/self/mountinfo").read_text().splitlines()
              if slug in ln]
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/pitwall-*-{slug}-*")]
    workdir = env.attacks.config.jobs_dir / job_id
    found += [f"job dir {p}" for p in workdir.glob("attempt-*")]
    return found


def settled_leftovers(env: Env, job_id: str) -> list[str]:
    # runsc tears its cgroups down asynchronously after the sandbox exits: allow it 5 s.
    deadline = time.monotonic() + 5.0
    while (left := job_leftovers(env, job_id)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _benign_loop(env: Env, bundle: bytes) -> None:
    worker = Worker(env.benign, name="benign")
    while not env.stop.is_set():
        job_id = env.benign.submit(env.spec(), bundle, researcher="benign")
        worker.run_one(timeout=5)
        env.benign_views.append(env.benign.store.get(job_id))


@pytest.fixture(scope="session", params=["audit-off", "audit-on"])
def env(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
        ) -> Iterator[Env]:
    """The red-team stack, once with the lookahead audit off and once on: an attack must
    fail the same way whether or not its code also runs in the audit's sandbox."""
    if shutil.which(RUNSC) is None:
        pytest.fail(f"the red-team suite needs gVisor at {RUNSC}; install runsc — never skipped")
    root = tmp_path_factory.mktemp("redteam")
    root.chmod(0o755)
    generate_dataset(Catalog(root / "lake"), "sample", symbols=SYMBOLS,
                     start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 15), seed=5)
    # Credentials in the worker's environment must never reach a sandbox.
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET
    os.environ["DATABASE_PASSWORD"] = SECRET
    config = load_config(environ={}, data_dir=root, sandbox="gvisor")
    attacks, benign = Stack.from_config(config), Stack.from_config(config)
    bundle = build_bundle({"strategy.py": BENIGN}, entrypoint="strategy.py")
    # The reference: the benign job alone, before any attack runs.
    ref_id = benign.submit(BacktestSpec(dataset="sample", universe=SYMBOLS, start=START,
                                        end=END, audit=False, limits=FAST), bundle,
                           researcher="benign")
    Worker(benign, name="benign").run_one(timeout=5)
    env = Env(root, attacks, benign, benign.store.get(ref_id), audit=request.param == "audit-on")
    assert env.reference.status.value == "COMPLETED", env.reference.reason
    thread = threading.Thread(target=_benign_loop, args=(env, bundle), daemon=True)
    thread.start()
    yield env
    env.stop.set()
    thread.join(timeout=60)
    os.environ.pop("AWS_SECRET_ACCESS_KEY", None)
    os.environ.pop("DATABASE_PASSWORD", None)
