"""Jobs/minute with 1 vs 2 ``pitwall worker`` processes, and the Redis queue's overhead.

Part 1 runs the same batch of CPU-bound jobs (a strategy that burns ``--burn`` seconds of
CPU inside gVisor) twice: through one worker process (one slot), then through two. The
rate counts from the first attempt's start to the last attempt's end (worker start-up
excluded), read from the metadata DB. Target on this 2-core machine: ratio ≥ 1.8x.

Part 2 measures the queue overhead, enqueue → claim, on Redis: a consumer blocked in
``claim`` and a producer that enqueues one job at a time; the median of ``--samples``.
Target: ≤ 20 ms.

Everything is private: a redis-server on a spare port, a fresh PostgreSQL database on the
shared server (dropped afterwards), a temp data dir. Run:
``.venv/bin/python bench/worker_scaling.py [--jobs 6] [--burn 3]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis
import sqlalchemy as sa

from pitwall.bundle import build_bundle
from pitwall.models import BacktestSpec, Limits
from pitwall_executor.config import load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.jobs.redis_queue import RedisQueue
from pitwall_executor.stack import Stack

PG_ADMIN = os.environ.get("PITWALL_TEST_PG_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parents[1]


def burner(seconds: float) -> bytes:
    code = (f"import time\nimport polars as pl\nimport pitwall\n\n@pitwall.vectorized\n"
            f"def burn(bars, **params):\n    t0 = time.process_time()\n    x = 0\n"
            f"    while time.process_time() - t0 < {seconds}:\n        x += 1\n"
            f"    return bars.select('ts', 'symbol', weight=pl.lit(0.0))\n")
    return build_bundle({"strategy.py": code.encode()}, entrypoint="strategy.py")


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly",
                             "no", "--dir", str(workdir)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return proc, url
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def run_batch(env: dict[str, str], stack: Stack, bundle: bytes, n_jobs: int,
              n_workers: int, log_dir: Path) -> float:
    """Jobs per minute of ``n_jobs`` through ``n_workers`` one-slot worker processes."""
    spec = BacktestSpec(dataset="sample", universe=["AAPL"], start=dt.date(2024, 3, 4),
                        end=dt.date(2024, 3, 5), limits=Limits(timeout_s=300, memory_mb=512))
    ids = [stack.submit(spec, bundle, researcher="bench") for _ in range(n_jobs)]
    procs = [subprocess.Popen([sys.executable, "-m", "pitwall_executor.cli", "worker",
                               "--slots", "1", "--no-recovery"], env=env, cwd=ROOT,
                              stdout=(log_dir / f"w{n_workers}-{i}.log").open("wb"),
                              stderr=subprocess.STDOUT) for i in range(n_workers)]
    try:
        while not all(stack.store.get(j).status.terminal for j in ids):
            time.sleep(0.2)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    bad = [v for v in (stack.store.get(j) for j in ids) if v.status.value != "COMPLETED"]
    if bad:
        raise SystemExit(f"{len(bad)} jobs did not complete: {bad[0].reason}")
    with stack.store.engine.connect() as conn:
        first, last = conn.execute(sa.text(
            "SELECT min(started_at), max(finished_at) FROM attempts WHERE job_id = ANY(:ids)"),
            {"ids": ids}).one()
    return n_jobs / ((last - first).total_seconds() / 60)


def queue_overhead(url: str, samples: int) -> float:
    """Median ms from ``enqueue`` returning to ``claim`` returning in another thread."""
    q = RedisQueue.from_url(url, prefix=f"bench-{uuid.uuid4().hex[:8]}")
    q.requeue_stale(older_than=60)  # creates the consumer group
    lat: list[float] = []
    sent: dict[str, float] = {}
    ready = threading.Event()

    def consume() -> None:
        for _ in range(samples):
            ready.set()
            claim = q.claim("bench", timeout=5)
            assert claim is not None
            lat.append((time.perf_counter() - sent[claim.job_id]) * 1000)
            q.ack(claim)

    t = threading.Thread(target=consume)
    t.start()
    for i in range(samples):
        ready.wait()
        ready.clear()
        time.sleep(0.005)  # the consumer is blocked in XREADGROUP, as an idle worker is
        sent[str(i)] = time.perf_counter()
        q.enqueue(str(i))
    t.join()
    return statistics.median(lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument("--burn", type=float, default=3.0)
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pitwall-bench-"))
    tmp.chmod(0o755)
    redis_proc, redis_url = start_redis(tmp)
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    db = f"pitwall_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
    try:
        generate_dataset(Catalog(tmp / "lake"), "sample", symbols=["AAPL"],
                         start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 8), seed=1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PITWALL_")}
        env.update({"PITWALL_DATA_DIR": str(tmp / "data"), "PITWALL_LAKE_URL": str(tmp / "lake"),
                    "PITWALL_DB_URL": PG_ADMIN.rsplit("/", 1)[0] + "/" + db,
                    "PITWALL_QUEUE_URL": redis_url, "PITWALL_SANDBOX": "gvisor"})
        stack = Stack.from_config(load_config(environ=env))
        bundle = burner(args.burn)
        one = run_batch(env, stack, bundle, args.jobs, 1, tmp)
        two = run_batch(env, stack, bundle, args.jobs, 2, tmp)
        print(f"{args.jobs} jobs burning {args.burn:g} s of CPU each in gVisor")
        print(f"1 worker process : {one:6.2f} jobs/min")
        print(f"2 worker processes: {two:6.2f} jobs/min")
        print(f"ratio 2/1          : {two / one:6.2f}x  (target >= 1.8x on 2 cores)")
        overhead = queue_overhead(redis_url, args.samples)
        print(f"queue enqueue->claim median on Redis: {overhead:.2f} ms over {args.samples} "
              "(target <= 20 ms)")
        stack.store.close()
    finally:
        redis_proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
