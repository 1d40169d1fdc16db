"""How fast the platform runs jobs again after a fault (issue 14, docs/architecture.md §1.5).

For each fault, the time from the fault (or its end) to the first job running again (its
attempt opened in the database) and to the queue drained (every job terminal), beside the
goal: after a worker loss ≤ 2 × the heartbeat window (``stale_after_s``); after Redis or
PostgreSQL are back ≤ 5 s.

- **worker SIGKILL**: the worker running a job is killed and, as a supervisor would, a
  replacement started at once; "first" is the killed job's next attempt. Same host, so
  its death is read from the process table, not waited for.
- **worker SIGSTOP**: the worker is alive but silent (what a worker on another host looks
  like when it dies): its job is taken back once its heartbeat is ``stale_after_s`` old.
- **Redis FLUSHDB**: idle workers, and jobs the flush lost (PENDING in the database, gone
  from the queue); the queue notices, recreates its group and the recovery loop
  reconciles at once.
- **PostgreSQL stop / start**: ``--outage`` seconds with jobs queued; measured from its
  return.

Everything is private and real: gVisor sandboxes, two ``pitwall worker --slots 1``
processes, a redis-server on a spare port, a PostgreSQL cluster of its own (initdb, as the
postgres user; needs root), a temp data dir. Run:
``.venv/bin/python bench/recovery.py [--jobs 4] [--stale-after 15] [--outage 10]``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis
import requests
import sqlalchemy as sa

from pitwall.bundle import build_bundle
from pitwall.models import BacktestSpec, Limits
from pitwall_executor.config import load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.stack import Stack

ROOT = Path(__file__).resolve().parents[1]
PITWALL = [sys.executable, "-m", "pitwall_executor.cli"]
SPEC = BacktestSpec(dataset="sample", universe=["AAPL", "MSFT"], start=dt.date(2024, 3, 4),
                    end=dt.date(2024, 3, 6), audit=False,
                    limits=Limits(timeout_s=300, memory_mb=512))


def sleeper(seconds: float) -> bytes:
    code = (f"import time\nimport polars as pl\nimport pitwall\n\n@pitwall.vectorized\n"
            f"def s(bars, **params):\n    time.sleep({seconds})\n"
            f"    return bars.select('ts', 'symbol', weight=pl.lit(0.0))\n")
    return build_bundle({"strategy.py": code.encode()}, entrypoint="strategy.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """A PostgreSQL cluster of our own, so stopping it touches nobody else."""

    def __init__(self, root: Path) -> None:
        self.bin = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1]).parent
        self.dir, self.port = root / "pg", free_port()
        self.dir.mkdir()
        shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres",
                  "--no-sync")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bin / tool), *args],
                       check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-w", "-l", str(self.dir / "log"),
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                  "-c fsync=off", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-w", "-m", "fast", "stop")


class Bench:
    """The deployment: config, a stack to submit with, the worker processes."""

    def __init__(self, root: Path, stale_after_s: float) -> None:
        self.root = root
        generate_dataset(Catalog(root / "lake"), "sample", symbols=["AAPL", "MSFT"],
                         start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 8), seed=5)
        self.redis_port = free_port()
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--save", "", "--appendonly", "no",
             "--dir", str(root)], stdout=subprocess.DEVNULL)
        self.pg = Postgres(root)
        self.pg.start()
        (root / "data").mkdir(mode=0o755)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PITWALL_")}
        self.env.update({
            "PITWALL_DATA_DIR": str(root / "data"), "PITWALL_DB_URL": self.pg.url,
            "PITWALL_QUEUE_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "PITWALL_LAKE_URL": str(root / "lake"), "PITWALL_SANDBOX": "gvisor",
            "PITWALL_STALE_AFTER_S": str(stale_after_s)})
        self.config = load_config(environ=self.env)
        time.sleep(0.5)  # redis-server binding its port
        self.stack = Stack.from_config(self.config)
        self.workers: list[subprocess.Popen[bytes]] = []

    def worker(self) -> subprocess.Popen[bytes]:
        port = free_port()
        log = (self.root / f"worker-{len(self.workers)}.log").open("wb")
        proc = subprocess.Popen([*PITWALL, "worker", "--slots", "1", "--grace", "5",
                                 "--health-port", str(port), "--health-host", "127.0.0.1"],
                                env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.workers.append(proc)
        until(lambda: _healthy(port), 60, "a worker to come up")
        return proc

    def submit(self, n: int, seconds: float, stack: Stack | None = None) -> list[str]:
        bundle = sleeper(seconds)
        return [(stack or self.stack).submit(SPEC, bundle, researcher="bench")
                for _ in range(n)]

    def rows(self, sql: str, **params: object) -> list[tuple[object, ...]]:
        with self.stack.store.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]

    def first_start_after(self, jobs: list[str], after: float) -> float | None:
        """The first attempt of ``jobs`` opened after ``after`` (epoch s)."""
        starts = [t.timestamp() for (t,) in self.rows(
            "SELECT started_at FROM attempts WHERE job_id = ANY(:j)", j=jobs)]
        later = [t for t in starts if t > after]
        return min(later) if later else None

    def drained(self, jobs: list[str]) -> bool:
        return all(self.stack.store.get(j).status.terminal for j in jobs)

    def close(self) -> None:
        for proc in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            if proc.poll() is None:
                proc.terminate()
        for proc in self.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
        self.stack.store.close()
        with contextlib.suppress(subprocess.CalledProcessError):
            self.pg.stop()
        self.redis.kill()


def _healthy(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
    except requests.ConnectionError:
        return False


def until(check: Callable[[], object], timeout: float, what: str) -> float:
    """Poll ``check`` until true; the epoch time it became so."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.time()


def _holder(b: Bench, job: str) -> subprocess.Popen[bytes]:
    [(worker,)] = b.rows("SELECT worker FROM attempts WHERE job_id = :j AND finished_at IS NULL",
                         j=job)
    pid = int(str(worker).split(":")[1])
    return next(p for p in b.workers if p.pid == pid)


def worker_loss(b: Bench, n: int, how: signal.Signals) -> tuple[float, float]:
    """Kill (or stop) the worker running a job; (to its next attempt, to drained)."""
    jobs = b.submit(n, 4)
    until(lambda: any(b.stack.store.get(j).progress >= 0.1 for j in jobs), 120, "a running job")
    victim = next(j for j in jobs if b.stack.store.get(j).progress >= 0.1)
    holder = _holder(b, victim)
    os.kill(holder.pid, how)
    t0 = time.time()
    if how is signal.SIGKILL:
        holder.wait()
        b.worker()  # the supervisor's restart
    again = until(lambda: b.stack.store.get(victim).attempt >= 2, 300, "the victim's retry")
    first = b.first_start_after([victim], t0) or again
    done = until(lambda: b.drained(jobs), 600, "the queue to drain")
    if how is signal.SIGSTOP:
        holder.kill()
        holder.wait()
        b.worker()
    return first - t0, done - t0


def redis_flush(b: Bench, n: int) -> tuple[float, float]:
    """Idle workers; ``n`` jobs the flush lost; (to the first running, to drained)."""
    offline = Stack.from_config(b.config.model_copy(update={"queue_url": "memory://"}))
    jobs = b.submit(n, 0, stack=offline)  # in the database only: as if the flush lost them
    offline.store.close()
    redis.Redis(port=b.redis_port).flushdb()
    t0 = time.time()
    first = until(lambda: b.first_start_after(jobs, t0), 120, "a lost job to run")
    done = until(lambda: b.drained(jobs), 600, "the queue to drain")
    return (b.first_start_after(jobs, t0) or first) - t0, done - t0


def postgres_outage(b: Bench, n: int, outage_s: float) -> tuple[float, float]:
    """``n`` jobs queued, PostgreSQL down ``outage_s``; from its return: (first, drained)."""
    jobs = b.submit(n, 0)
    b.pg.stop()
    time.sleep(outage_s)
    b.pg.start()
    t0 = time.time()
    until(lambda: b.first_start_after(jobs, t0), 120, "a job to run after the outage")
    done = until(lambda: b.drained(jobs), 600, "the queue to drain")
    return (b.first_start_after(jobs, t0) or t0) - t0, done - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4, help="jobs per fault")
    parser.add_argument("--stale-after", type=float, default=15.0,
                        help="stale_after_s, the heartbeat window (the default config's)")
    parser.add_argument("--outage", type=float, default=10.0, help="PostgreSQL down, s")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="pitwall-recovery-"))
    root.chmod(0o755)
    b = Bench(root, args.stale_after)
    try:
        for _ in range(2):
            b.worker()
        for job in b.submit(2, 0):  # warm: the sandbox snapshot is built once
            until(lambda j=job: b.stack.store.get(j).status.terminal, 300, "the warm-up")
        loss_goal = 2 * args.stale_after
        rows = [
            ("worker SIGKILL (same host)", "the kill", worker_loss(b, args.jobs, signal.SIGKILL),
             loss_goal),
            ("worker SIGSTOP (silent)", "the stop", worker_loss(b, args.jobs, signal.SIGSTOP),
             loss_goal),
            ("Redis FLUSHDB", "the flush", redis_flush(b, args.jobs), 5.0),
            (f"PostgreSQL down {args.outage:.0f} s", "its return",
             postgres_outage(b, args.jobs, args.outage), 5.0),
        ]
        jobs = [str(j) for (j,) in b.rows("SELECT id FROM jobs")]
        completed = b.rows("SELECT count(*) FROM jobs WHERE status = 'COMPLETED'")[0][0]
        metrics = b.rows("SELECT count(*) FROM metrics")[0][0]
    finally:
        b.close()
        shutil.rmtree(root, ignore_errors=True)
    print(f"stale_after_s {args.stale_after:.0f} s, {args.jobs} jobs per fault, "
          f"2 workers of 1 slot, gVisor")
    print(f"{'fault':<28} {'measured from':<14} {'first running':>14} {'drained':>9}  goal")
    for name, origin, (first, drained), goal in rows:
        mark = "✓" if first <= goal else "✗"
        print(f"{name:<28} {origin:<14} {first:>12.2f} s {drained:>7.1f} s  ≤ {goal:.0f} s "
              f"{mark} ({first / goal:.2f} of it)")
    print(f"{len(jobs)} jobs, {completed} COMPLETED, {metrics} metrics rows (one per completed "
          "job: each ran to completion once)")


if __name__ == "__main__":
    main()
