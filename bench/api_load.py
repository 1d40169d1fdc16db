"""Load on the Backtest API: 50 concurrent + 200 queued short jobs while status reads hammer it.

Prints the status-read latency (p50/p99 against the 50 ms target) with the idle API's in the
same run as the baseline, the queue overhead (submission → attempt start with an idle worker,
against the 20 ms target), and end-to-end jobs/minute against the physical limit of the
worker slots (slots x 60 / median sandboxed run time). Every job runs in the real gVisor
sandbox.

Modes: ``split`` (the default: the production topology) = one ``pitwall api`` process on a
throw-away PostgreSQL database of the shared server and a private redis-server, plus
``--workers`` separate ``pitwall worker --slots 1 --nice N`` processes; ``embedded`` = one
``pitwall serve --workers N`` process (SQLite, in-process queue, worker threads beside the
API thread).

Status reads come from ``--readers`` reader *processes* (one thread each, ``--think-ms``
between reads), so a reader's own GIL never delays the timing of its request; the latency
is client side (connection reuse, as a polling client does). Readers poll as clients do:
a random job among those they have not yet seen end (PENDING or RUNNING: the API reads
its row from the database), and drop a job once they have seen it end. A share
(``--ended-share``) of reads fetch a job the reader already saw end, which the API
serves from its in-process cache of ended views with no database call. The two kinds
are reported apart (the target is on the uncached reads); the read that first sees a job
end is counted apart too (a database read that fills the cache). The API's own
histogram for the route (``/metrics``, server side; both kinds) is printed beside it.

Run: ``.venv/bin/python bench/api_load.py [--jobs 250] [--workers 2] [--mode split]``
(``--jobs 20`` for a quick look while developing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import queue
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
from prometheus_client.parser import text_string_to_metric_families

from pitwall.bundle import build_bundle
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.jobs.researchers import create_researcher
from pitwall_executor.jobs.store import MetadataStore

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
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("PITWALL_")},
                    "PITWALL_SANDBOX": args.sandbox}
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
                         "--workers", str(args.workers), "--nice", str(args.nice)])
        else:
            self._spawn([*pitwall, "api", "--port", str(self.port)])
            for i in range(args.workers):  # one slot per process, as on separate nodes
                self._spawn([*pitwall, "worker", "--slots", "1", "--nice", str(args.nice),
                             "--recovery" if i == 0 else "--no-recovery"])
        deadline = time.monotonic() + 180  # imports and migrations on a loaded machine
        while True:
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            dead = [p for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(p.read_text()[-2000:] for p in sorted(self.root.glob("proc-*")))
                raise SystemExit(f"the API did not come up:\n{logs}")
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
    """Submissions and the end-of-job polling over HTTP, one session per thread."""

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
        files: dict[str, tuple[str | None, bytes | str]] = {
            "bundle": ("b.zip", self.bundle), "spec": (None, SPEC)}
        res = self._session().post(
            self.url + "/v1/backtests", headers={"Authorization": f"Bearer {token}"},
            files=files, timeout=60)
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

    def cancel(self, job: str) -> None:
        """Cancel ``job`` unless it already ended (409)."""
        res = self._session().post(self.url + f"/v1/backtests/{job}/cancel", timeout=60,
                                   headers={"Authorization": f"Bearer {self.owner[job]}"})
        if res.status_code not in (202, 409):
            res.raise_for_status()

    def wait(self, job: str, timeout: float = 1800, poll_s: float = 0.05) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (view := self.status(job))["status"] not in TERMINAL:
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job} still {view['status']} after {timeout} s")
            time.sleep(poll_s)
        return view


def _seconds(view: dict[str, Any], a: str, b: str) -> float:
    t0 = dt.datetime.fromisoformat(view[a])
    t1 = dt.datetime.fromisoformat(view[b])
    return (t1 - t0).total_seconds()


def measure_overhead(client: Client, samples: int) -> tuple[list[float], list[str]]:
    """Submission → attempt start, one job at a time so a worker is always idle."""
    out, ids = [], []
    for i in range(samples):
        ids.append(client.submit(i))
        view = client.wait(ids[-1])
        out.append(_seconds(view, "created_at", "started_at"))
    return out, ids


# What a status read was, from what the reader knew and what the API answered.
UNCACHED_PENDING, UNCACHED_RUNNING, ENDED_FIRST, CACHED_ENDED = range(4)
KINDS = {UNCACHED_PENDING: "uncached, job PENDING", UNCACHED_RUNNING: "uncached, job RUNNING",
         ENDED_FIRST: "first read of an ended job (fills the cache)",
         CACHED_ENDED: "cached, job already ended"}


def reader(url: str, jobs: Any, stop: Any, results: Any, think_s: float, seed: int,
           ended_share: float) -> None:
    """One reader process, polling as clients do: GET a random job it has not yet seen end
    (or, ``ended_share`` of the time, one it has), record (wall time, seconds, kind), think."""
    rng = random.Random(seed)
    session = requests.Session()
    live: list[tuple[str, dict[str, str]]] = []
    ended: list[tuple[str, dict[str, str]]] = []
    samples: list[tuple[float, float, int]] = []
    while not stop.is_set():
        try:
            while True:
                job, token = jobs.get_nowait()
                live.append((job, {"Authorization": f"Bearer {token}"}))
        except queue.Empty:
            pass
        if not live and not ended:
            time.sleep(0.01)
            continue
        pick_ended = not live or (ended and rng.random() < ended_share)
        i = rng.randrange(len(ended) if pick_ended else len(live))
        job, headers = ended[i] if pick_ended else live[i]
        at = time.time()
        t0 = time.perf_counter()
        res = session.get(f"{url}/v1/backtests/{job}", headers=headers, timeout=60)
        took = time.perf_counter() - t0
        if res.status_code != 200:
            raise SystemExit(f"status read answered {res.status_code}: {res.text[:200]}")
        status = res.json()["status"]
        if pick_ended:
            kind = CACHED_ENDED
        elif status in TERMINAL:
            kind = ENDED_FIRST
            ended.append(live.pop(i))
        else:
            kind = UNCACHED_RUNNING if status == "RUNNING" else UNCACHED_PENDING
        samples.append((at, took, kind))
        if think_s:
            time.sleep(think_s)
    results.put(samples)


class Readers:
    """``n`` reader processes fed with (job id, token) as the jobs are submitted."""

    def __init__(self, url: str, n: int, think_s: float, ended_share: float) -> None:
        ctx = mp.get_context("spawn")  # no fork of a threaded process
        self.stop = ctx.Event()
        self.results: Any = ctx.Queue()
        self.feeds: list[Any] = [ctx.Queue() for _ in range(n)]
        self.procs = [ctx.Process(target=reader, args=(url, feed, self.stop, self.results,
                                                      think_s, i, ended_share), daemon=True)
                      for i, feed in enumerate(self.feeds)]
        for proc in self.procs:
            proc.start()

    def add(self, job: str, token: str) -> None:
        for feed in self.feeds:
            feed.put((job, token))

    def finish(self) -> list[tuple[float, float, int]]:
        self.stop.set()
        samples: list[tuple[float, float, int]] = []
        for _ in self.procs:
            samples += self.results.get(timeout=120)
        for proc in self.procs:
            proc.join(30)
        return samples


def server_histogram(url: str) -> dict[float, int]:
    """The API's cumulative latency buckets of GET /v1/backtests/{id} (le → count)."""
    text = requests.get(url + "/metrics", timeout=30).text
    return {float(s.labels["le"]): int(s.value)
            for family in text_string_to_metric_families(text)
            if family.name == "pitwall_http_request_duration_seconds"
            for s in family.samples
            if s.name.endswith("_bucket") and s.labels["route"] == "/v1/backtests/{id}"
            and s.labels["method"] == "GET"}


def run_load(client: Client, readers: Readers, args: argparse.Namespace) -> dict[str, Any]:
    ids: list[str] = []

    def submit(i: int) -> str:
        job = client.submit(i)
        readers.add(job, client.owner[job])
        return job

    start = time.time()
    with ThreadPoolExecutor(max_workers=max(1, args.concurrent)) as pool:
        ids += pool.map(submit, range(args.concurrent))
    submit_concurrent = time.time() - start
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids += pool.map(submit, range(args.concurrent, args.concurrent + args.queued))
    submitted = time.time()
    if args.window_s is not None:  # measure a fixed window under the full queue, then stop
        time.sleep(max(0.0, submitted + args.window_s - time.time()))
        end = time.time()
        for job in ids:
            client.cancel(job)
        views = [client.wait(job, poll_s=0.25) for job in list(ids)]
        return {"views": views, "start": start, "submitted": submitted, "end": end,
                "elapsed": end - start, "submit_concurrent": submit_concurrent}
    views = [client.wait(job, poll_s=0.25) for job in list(ids)]
    end = time.time()
    return {"views": views, "start": start, "submitted": submitted, "end": end,
            "elapsed": end - start, "submit_concurrent": submit_concurrent}


Sample = tuple[float, float, int]  # (wall time, seconds, kind)
UNCACHED = (UNCACHED_PENDING, UNCACHED_RUNNING)


def _window(samples: list[Sample], lo: float, hi: float,
            kinds: tuple[int, ...] = tuple(KINDS)) -> list[float]:
    return [took for at, took, kind in samples if lo <= at < hi and kind in kinds]


def _line(label: str, lat: list[float]) -> str:
    if not lat:
        return f"{label}: no samples"
    span = f"p50={1000 * _pct(lat, 0.5):.1f} ms p99={1000 * _pct(lat, 0.99):.1f} ms"
    return f"{label}: n={len(lat)} {span} max={1000 * max(lat):.1f} ms"


def _server_line(before: dict[float, int], after: dict[float, int]) -> str:
    diff = {le: after.get(le, 0) - before.get(le, 0) for le in after}
    total = diff.get(float("inf"), 0)
    if not total:
        return "server side: no samples"
    within = diff.get(0.05, 0)
    p99 = next(le for le in sorted(diff) if diff[le] >= 0.99 * total)
    return (f"server side (/metrics, GET /v1/backtests/{{id}}): n={total}, {within / total:.2%} "
            f"within 50 ms, p99 <= {1000 * p99:g} ms (bucket bound)")


def report(args: argparse.Namespace, overhead: list[float], load: dict[str, Any],
           samples: list[Sample], idle: tuple[float, float],
           server: tuple[dict[float, int], dict[float, int]], loads: tuple[str, str]) -> None:
    views = load["views"]
    by_status: dict[str, int] = {}
    for v in views:
        by_status[v["status"]] = by_status.get(v["status"], 0) + 1
    runs = [_seconds(v, "started_at", "finished_at") for v in views
            if v["started_at"] and v["status"] == "COMPLETED"] or [float("nan")]
    completed = sum(v["status"] == "COMPLETED" for v in views)
    jpm = 60 * completed / load["elapsed"]
    limit = args.workers * 60 / statistics.median(runs)
    topology = (f"split: pitwall api + {args.workers} pitwall worker process(es) at nice "
                f"{args.nice}, PostgreSQL + Redis" if args.mode == "split" else
                f"embedded: pitwall serve, {args.workers} worker thread(s) at nice {args.nice}, "
                "SQLite + in-process queue")
    print(f"{topology}; sandbox={args.sandbox}")
    print(f"jobs={len(views)} ({args.concurrent} concurrent + {args.queued} queued); "
          f"{args.readers} reader processes, {args.think_ms:g} ms think time")
    print(f"load average before: {loads[0]}; after: {loads[1]}")
    print(f"outcomes: {by_status}")
    print(f"{args.concurrent} concurrent submissions took {load['submit_concurrent']:.2f} s")
    lo, mid, hi = load["start"], load["submitted"], load["end"]
    print(_line("idle API, cached reads of ended jobs (baseline)",
                _window(samples, *idle, (CACHED_ENDED,))))
    uncached = _window(samples, lo, hi, UNCACHED)
    cached = _window(samples, lo, hi, (CACHED_ENDED,))
    print("status reads under the whole load, by kind:")
    for kind, label in KINDS.items():
        print(_line(f"  {label}", _window(samples, lo, hi, (kind,))))
    print(_line("  UNCACHED (PENDING + RUNNING): while submitting",
                _window(samples, lo, mid, UNCACHED)))
    print(_line("  UNCACHED (PENDING + RUNNING): while the queue drains",
                _window(samples, mid, hi, UNCACHED)))
    print(_line("  UNCACHED (PENDING + RUNNING): whole load", uncached))
    print(_line("  CACHED (ended): whole load", cached))
    if uncached:
        p99 = 1000 * _pct(uncached, 0.99)
        rate = len(_window(samples, lo, hi)) / load["elapsed"]
        print(f"  {rate:.0f} reads/s in all; uncached p99 target <= 50 ms: ratio {p99 / 50:.2f} "
              f"({'met' if p99 <= 50 else 'NOT met'})")
        if cached:
            print(f"  uncached p50 / cached p50 = "
                  f"{_pct(uncached, 0.5) / _pct(cached, 0.5):.2f}x; p99 "
                  f"{_pct(uncached, 0.99) / _pct(cached, 0.99):.2f}x")
    print(_server_line(*server))
    if overhead:
        med = 1000 * statistics.median(overhead)
        print(f"queue overhead (submit -> attempt start, idle worker): n={len(overhead)} "
              f"median={med:.1f} ms max={1000 * max(overhead):.1f} ms "
              f"(target median <= 20 ms: ratio {med / 20:.2f})")
    if args.window_s is not None:
        print(f"window mode: reads measured for {args.window_s:g} s after the last submission "
              f"with the queue full, then the {len(views) - completed} jobs not yet ended "
              "were cancelled")
    print(f"end to end: {jpm:.1f} jobs/min over {load['elapsed']:.1f} s; median run "
          f"{statistics.median(runs):.2f} s; slot limit {limit:.1f} jobs/min "
          f"(efficiency {jpm / limit:.2f})")


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=250,
                        help="total load jobs: min(50, jobs) concurrent, the rest queued")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker slots (split: one pitwall worker process each)")
    parser.add_argument("--nice", type=int, default=10, help="the workers' nice value")
    parser.add_argument("--readers", type=int, default=4, help="status-read processes")
    parser.add_argument("--think-ms", type=float, default=20.0,
                        help="pause of each reader between two reads")
    parser.add_argument("--idle-s", type=float, default=5.0,
                        help="seconds of status reads on the idle API (the baseline)")
    parser.add_argument("--mode", choices=["split", "embedded"], default="split")
    parser.add_argument("--sandbox", default="gvisor")
    parser.add_argument("--overhead-samples", type=int, default=10)
    parser.add_argument("--window-s", type=float, default=None,
                        help="measure this many seconds after the last submission, then "
                             "cancel what has not ended (default: wait for every job)")
    parser.add_argument("--ended-share", type=float, default=0.1,
                        help="share of reads of a job the reader already saw end (cached)")
    args = parser.parse_args()
    args.concurrent = min(50, args.jobs)
    args.queued = args.jobs - args.concurrent
    root = Path(tempfile.mkdtemp(prefix="pitwall-api-load-"))
    deploy = Deployment(args, root)
    readers: Readers | None = None
    try:
        tokens = prepare(root, deploy.db_url)
        deploy.start(args)
        client = Client(deploy.url, tokens)
        readers = Readers(deploy.url, args.readers, args.think_ms / 1000, args.ended_share)
        overhead, done = measure_overhead(client, args.overhead_samples)
        if not done:
            done = [client.submit(0)]
            client.wait(done[0])
        for job in done:
            readers.add(job, client.owner[job])
        time.sleep(0.5)  # the readers pick the jobs up
        idle = (time.time(), time.time() + args.idle_s)
        time.sleep(args.idle_s)
        before = server_histogram(deploy.url)
        load_before = _loadavg()
        load = run_load(client, readers, args)
        after = server_histogram(deploy.url)
        samples = readers.finish()
        readers = None
        report(args, overhead, load, samples, idle, (before, after), (load_before, _loadavg()))
    finally:
        if readers is not None:
            readers.stop.set()
        deploy.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
