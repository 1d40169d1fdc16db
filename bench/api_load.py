"""Load on the Backtest API: 50 concurrent + 200 queued short jobs while status reads hammer it.

Prints the status-read latency (p50/p99, client side, against the 50 ms target), the
queue overhead (submission → attempt start with an idle worker, against the 20 ms
target), and end-to-end jobs/minute against the physical limit of the worker slots
(slots x 60 / median sandboxed run time). Every job runs in the real gVisor sandbox.

Modes: ``embedded`` = one ``pitwall serve --workers N`` process (SQLite, in-process
queue); ``split`` = ``pitwall api`` + one ``pitwall worker --slots N`` process on a
throw-away PostgreSQL database of the shared server and a private redis-server.

Run: ``.venv/bin/python bench/api_load.py [--jobs 250] [--workers 2] [--mode embedded]``
(``--jobs 20`` for a quick look while developing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from pitwall.bundle import build_bundle
from pitwall_executor.auth import create_researcher
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.store import MetadataStore

BIN = Path(sys.executable).parent
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
STRATEGY = ("import polars as pl\nimport pitwall\n\n@pitwall.vectorized\ndef s(bars):\n"
            "    return bars.select('ts', 'symbol', weight=pl.lit(0.25))\n")
SPEC = ('{"dataset": "bench", "universe": ["AAPL", "MSFT"], "start": "2024-03-04", '
        '"end": "2024-03-08"}')
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
N_RESEARCHERS = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Deployment:
    """The server processes under test, and how to reach them."""

    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "PITWALL_SANDBOX": args.sandbox}
        self.pg_db: str | None = None
        if args.mode == "split":
            self.pg_db = f"pitwall_bench_{uuid.uuid4().hex[:8]}"
            with sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{self.pg_db}"'))
            redis_port = _free_port()
            self._spawn(["redis-server", "--port", str(redis_port), "--save", "",
                         "--appendonly", "no", "--dir", str(root)])
            self.env["PITWALL_DB_URL"] = PG_ADMIN.rsplit("/", 1)[0] + f"/{self.pg_db}"
            self.env["PITWALL_QUEUE_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        self.db_url = self.env.get("PITWALL_DB_URL", f"sqlite:///{root / 'pitwall.db'}")

    def _spawn(self, cmd: list[str]) -> None:
        log = (self.root / f"proc-{len(self.procs)}.log").open("wb")
        self.procs.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log))

    def start(self, args: argparse.Namespace) -> None:
        pitwall = [str(BIN / "pitwall"), "--data-dir", str(self.root)]
        if args.mode == "embedded":
            self._spawn([*pitwall, "serve", "--port", str(self.port),
                         "--workers", str(args.workers)])
        else:
            self._spawn([*pitwall, "api", "--port", str(self.port)])
            self._spawn([*pitwall, "worker", "--slots", str(args.workers)])
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the API did not come up; see {self.root}/proc-*.log")
            time.sleep(0.2)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.pg_db is not None:
            with sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)'))


def prepare(root: Path, db_url: str) -> list[str]:
    """The dataset and the researchers' tokens (one researcher per 25 jobs, like a team)."""
    root.chmod(0o755)
    generate_dataset(Catalog(root / "lake"), "bench", symbols=["AAPL", "MSFT"],
                     start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 15), seed=3)
    store = MetadataStore(db_url)
    tokens = [create_researcher(store, f"r{i}") for i in range(N_RESEARCHERS)]
    store.close()
    return tokens


class Client:
    """Submissions and status reads over HTTP, one session per thread."""

    def __init__(self, url: str, tokens: list[str]) -> None:
        self.url = url
        self.tokens = tokens
        self.bundle = build_bundle({"strategy.py": STRATEGY}, entrypoint="strategy.py")
        self.owner: dict[str, str] = {}
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "s"):
            self._local.s = requests.Session()
        session: requests.Session = self._local.s
        return session

    def submit(self, i: int) -> str:
        token = self.tokens[i % len(self.tokens)]
        res = self._session().post(
            self.url + "/v1/backtests", headers={"Authorization": f"Bearer {token}"},
            files={"bundle": ("b.zip", self.bundle), "spec": (None, SPEC)}, timeout=60)
        res.raise_for_status()
        job = str(res.json()["id"])
        self.owner[job] = token
        return job

    def status(self, job: str) -> dict[str, Any]:
        res = self._session().get(self.url + f"/v1/backtests/{job}", timeout=60,
                                  headers={"Authorization": f"Bearer {self.owner[job]}"})
        res.raise_for_status()
        view: dict[str, Any] = res.json()
        return view

    def wait(self, job: str, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (view := self.status(job))["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job} still {view['status']} after {timeout} s")
            time.sleep(0.05)
        return view


def _seconds(view: dict[str, Any], a: str, b: str) -> float:
    t0 = dt.datetime.fromisoformat(view[a])
    t1 = dt.datetime.fromisoformat(view[b])
    return (t1 - t0).total_seconds()


def measure_overhead(client: Client, samples: int) -> list[float]:
    """Submission → attempt start, one job at a time so a worker is always idle."""
    out = []
    for i in range(samples):
        view = client.wait(client.submit(i))
        out.append(_seconds(view, "created_at", "started_at"))
    return out


def hammer(client: Client, ids: list[str], stop: threading.Event, lat: list[float]) -> None:
    while not stop.is_set():
        if not ids:
            time.sleep(0.01)
            continue
        job = random.choice(ids)
        t0 = time.perf_counter()
        client.status(job)
        lat.append(time.perf_counter() - t0)


def run_load(client: Client, args: argparse.Namespace) -> dict[str, Any]:
    ids: list[str] = []
    latencies: list[float] = []
    stop = threading.Event()
    readers = [threading.Thread(target=hammer, args=(client, ids, stop, latencies), daemon=True)
               for _ in range(args.readers)]
    start = time.monotonic()
    for r in readers:
        r.start()
    with ThreadPoolExecutor(max_workers=max(1, args.concurrent)) as pool:
        ids += pool.map(client.submit, range(args.concurrent))
    submit_concurrent = time.monotonic() - start
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids += pool.map(client.submit, range(args.concurrent, args.concurrent + args.queued))
    views = [client.wait(job) for job in list(ids)]
    elapsed = time.monotonic() - start
    stop.set()
    for r in readers:
        r.join()
    return {"views": views, "latencies": latencies, "elapsed": elapsed,
            "submit_concurrent": submit_concurrent}


def report(args: argparse.Namespace, overhead: list[float], load: dict[str, Any]) -> None:
    views, lat = load["views"], load["latencies"]
    by_status: dict[str, int] = {}
    for v in views:
        by_status[v["status"]] = by_status.get(v["status"], 0) + 1
    runs = [_seconds(v, "started_at", "finished_at") for v in views if v["started_at"]]
    jpm = 60 * len(views) / load["elapsed"]
    limit = args.workers * 60 / statistics.median(runs)
    p50, p99 = 1000 * _pct(lat, 0.5), 1000 * _pct(lat, 0.99)
    print(f"mode={args.mode} sandbox={args.sandbox} worker slots={args.workers} "
          f"jobs={len(views)} ({args.concurrent} concurrent + {args.queued} queued) "
          f"readers={args.readers}")
    print(f"outcomes: {by_status}")
    print(f"{args.concurrent} concurrent submissions took {load['submit_concurrent']:.2f} s")
    print(f"status reads under load: n={len(lat)} p50={p50:.1f} ms p99={p99:.1f} ms "
          f"(target p99 <= 50 ms: ratio {p99 / 50:.2f})")
    if overhead:
        med = 1000 * statistics.median(overhead)
        print(f"queue overhead (submit -> attempt start, idle worker): n={len(overhead)} "
              f"median={med:.1f} ms max={1000 * max(overhead):.1f} ms "
              f"(target median <= 20 ms: ratio {med / 20:.2f})")
    print(f"end to end: {jpm:.1f} jobs/min over {load['elapsed']:.1f} s; median run "
          f"{statistics.median(runs):.2f} s; slot limit {limit:.1f} jobs/min "
          f"(efficiency {jpm / limit:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=250,
                        help="total load jobs: min(50, jobs) concurrent, the rest queued")
    parser.add_argument("--workers", type=int, default=2, help="worker slots")
    parser.add_argument("--readers", type=int, default=4, help="status-read threads")
    parser.add_argument("--mode", choices=["embedded", "split"], default="embedded")
    parser.add_argument("--sandbox", default="gvisor")
    parser.add_argument("--overhead-samples", type=int, default=10)
    args = parser.parse_args()
    args.concurrent = min(50, args.jobs)
    args.queued = args.jobs - args.concurrent
    root = Path(tempfile.mkdtemp(prefix="pitwall-api-load-"))
    deploy = Deployment(args, root)
    try:
        tokens = prepare(root, deploy.db_url)
        deploy.start(args)
        client = Client(deploy.url, tokens)
        overhead = measure_overhead(client, args.overhead_samples)
        report(args, overhead, run_load(client, args))
    finally:
        deploy.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
