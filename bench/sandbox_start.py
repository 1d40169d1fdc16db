"""Start-up cost of the gVisor sandbox, against bare Python on the host (docs/architecture.md §5).

Measures, median of N runs, from "start" to "strategy code running": the time until the
first byte the child writes (a marker it prints as its first statement), for
``python -c`` and the runner's imports (``pitwall`` → polars, numpy), on the host (plain
subprocess) and in gVisor (``GVisorBackend``). Host and sandbox runs alternate (round
robin) so a change of machine load hits both alike.

Both sides get compiled bytecode: the sandbox its read-only ``PYTHONPYCACHEPREFIX`` tree
(``sandbox/pycache.py``), the host a private prefix filled by the warm-up run (the
venv itself is never written). One row shows the sandbox without bytecode, as before
the tree existed. The restored row is a cold job served by ``runsc restore`` of a
checkpointed warm runner (``sandbox/snapshot.py``; the image is built before timing),
interleaved with the plain cold job and the host job.
Run: ``.venv/bin/python bench/sandbox_start.py [N]``.
"""

from __future__ import annotations

import atexit
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pitwall.models import Limits
from pitwall_executor.sandbox.base import PYTHON, SandboxRequest
from pitwall_executor.sandbox.checkpoint import SnapshotStore
from pitwall_executor.sandbox.gvisor import GVisorBackend

SDK = str(Path(__file__).resolve().parents[1] / "sdk")
BARE = "import os; os.write(2, b'up\\n')"
# What the runner pays before a strategy's first line runs: the SDK (polars) and numpy.
IMPORTS = "import pitwall.sandbox.runner, pitwall.strategy, numpy; import os; os.write(2, b'up\\n')"


_HOST_PYCACHE = tempfile.mkdtemp(prefix="pitwall-bench-host-pyc-")
atexit.register(shutil.rmtree, _HOST_PYCACHE, True)


def host_env(**extra: str) -> dict[str, str]:
    """The host side's environment: the same paths and bytecode policy as the sandbox's."""
    return {"PYTHONPATH": SDK + ":" + _site_packages(), "PYTHONPYCACHEPREFIX": _HOST_PYCACHE,
            "TZ": "UTC", **extra}


def host(code: str) -> float:
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-S", "-c", code], stderr=subprocess.PIPE,
                            env=host_env())
    assert proc.stderr is not None
    proc.stderr.read(1)
    first = time.monotonic() - start
    proc.wait()
    return first


def sandbox(backend: GVisorBackend, code: str, env: dict[str, str] | None = None) -> float:
    argv = (PYTHON, "-S", "-c", code)
    out = backend.run(SandboxRequest("bench", argv, env=env or {}, limits=Limits()))
    assert out.exit_code == 0 and out.start_s is not None, out
    return out.start_s


#: No bytecode tree (an empty value unsets it): the stdlib's own __pycache__ is used, and
#: the venv (uv compiles nothing by default) is compiled from source in every job: before.
NO_PYC = {"PYTHONPYCACHEPREFIX": ""}


def _site_packages() -> str:
    return next(p for p in sys.path if p.endswith("site-packages"))


def median(fn: Callable[[], float], n: int) -> float:
    fn()  # warm the page cache
    return statistics.median(fn() for _ in range(n))


def interleaved(fns: dict[str, Callable[[], float]], n: int) -> dict[str, float]:
    """Median of ``n`` runs of each, in rounds (one run of each per round) after a
    warm-up round: host and sandbox see the same machine load."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(n + 1):
        for name, fn in fns.items():
            value = fn()
            if i:
                samples[name].append(value)
    return {name: statistics.median(v) for name, v in samples.items()}



# --- issue 5: the real job path (runner + strategy), warm pool, steady CPU-bound code ---
COLD = "gVisor cold job, to the first strategy line"
RESTORED = "gVisor cold job restored from a checkpoint, 1st line"
HOST_RUNNER = "host   same job (runner), first strategy line"
WARM = "gVisor warm pool job, to the first strategy line"
CPU_IN = "gVisor CPU-bound loop (in-process timer)"
CPU_OUT = "host   CPU-bound loop (in-process timer)"
STRATEGY = """import os
os.write(2, b"first line\\n")
import polars as pl
import pitwall

@pitwall.vectorized
def s(bars):
    return bars.select("ts", "symbol", weight=pl.lit(0.0))
"""
# The sandbox gets one CPU (--cpu-num-from-quota): give BLAS one thread on both sides.
ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "POLARS_MAX_THREADS": "1"}
# Pure-Python and NumPy work timed inside the process, so start-up is not in it: steady
# state, the fastest of 5 repetitions after one warm-up (as ``timeit``: on a shared
# machine the other repetitions measure the neighbours' load) (the first touches fresh pages and,
# in gVisor, runs while the sandbox is still settling: its clock is not calibrated for
# the first second, so every clock read is a system call then).
CPU = """
import os, time
import numpy as np
a = np.random.default_rng(0).random((300, 300))
def work():
    t = time.perf_counter()
    sum(i * i for i in range(1_000_000))
    for _ in range(10):
        a @ a
    return time.perf_counter() - t
work()
os.write(2, repr(min(work() for _ in range(5))).encode())
"""


def make_job(root: Path) -> Path:
    import datetime as dt

    import polars as pl

    job = root / f"job-{len(list(root.glob('job-*')))}"
    for d in ("bundle", "input"):
        (job / d).mkdir(parents=True)
    (job / "bundle" / "strategy.py").write_text(STRATEGY)
    t0 = dt.datetime(2024, 1, 2, 14, 30)
    pl.DataFrame({"ts": [t0 + dt.timedelta(minutes=i) for i in range(390)], "symbol": "AAA",
                  "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0},
                 ).with_columns(pl.col("ts").dt.cast_time_unit("us").dt.replace_time_zone("UTC")
                                ).write_ipc(job / "input" / "bars.arrow")
    (job / "input" / "spec.json").write_text('{"entrypoint": "strategy.py:s", "params": {}, '
                                             '"seed": 1}')
    for p in (root, job, job / "bundle", job / "input"):
        p.chmod(0o755)
    return job


def host_runner(job: Path) -> float:
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-S", "-m", "pitwall.sandbox.runner", str(job)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            env=host_env())
    assert proc.stderr is not None
    proc.stderr.read(1)
    first = time.monotonic() - start
    proc.wait()
    return first


def runner_rows(backend: GVisorBackend, restoring: GVisorBackend, state: Path, n: int,
                ) -> dict[str, float]:
    from pitwall_executor.sandbox.base import runner_request
    from pitwall_executor.sandbox.pool import PooledBackend, WarmPool

    jobs = state / "jobs-bench"
    jobs.mkdir()
    job = make_job(jobs)
    limits = Limits()

    def cold() -> float:
        out = backend.run(runner_request("bench", job, limits))
        assert out.ok and out.start_s is not None, out
        return out.start_s

    snapshots = restoring.snapshots
    assert isinstance(snapshots, SnapshotStore)
    assert snapshots.image(limits) is not None  # built untimed

    def restored() -> float:
        before = snapshots.restored
        out = restoring.run(runner_request("bench", job, limits))
        assert out.ok and out.start_s is not None and snapshots.restored == before + 1, out
        return out.start_s

    pool = WarmPool(backend, 1, limits, state / "pool")
    pooled = PooledBackend(backend, pool)

    def warm() -> float:
        assert pool.wait_ready(1, timeout=60)
        out = pooled.run(runner_request("bench", job, limits))
        assert out.ok and out.start_s is not None, out
        return out.start_s

    def cpu_in() -> float:
        out = backend.run(SandboxRequest("bench", (PYTHON, "-S", "-c", CPU), env=ONE_THREAD,
                                         limits=limits))
        assert out.ok, out
        return float(out.stderr)

    def cpu_out() -> float:
        res = subprocess.run([sys.executable, "-S", "-c", CPU], capture_output=True, check=True,
                             env=host_env(**ONE_THREAD))
        return float(res.stderr)

    try:
        rows = interleaved({HOST_RUNNER: lambda: host_runner(job), COLD: cold,
                            RESTORED: restored}, n)
        rows[WARM] = median(warm, n)
    finally:
        pool.close()
    rows.update(interleaved({CPU_OUT: cpu_out, CPU_IN: cpu_in}, n))
    return rows


def main(n: int = 7) -> None:
    print(f"load before: {Path('/proc/loadavg').read_text().split()[:3]}")
    with tempfile.TemporaryDirectory(prefix="pitwall-bench-") as state:
        # The plain cold path (snapshots off), and the default one restoring from a snapshot.
        backend = GVisorBackend(Path(state) / "plain")
        restoring = GVisorBackend(Path(state) / "restoring")
        SnapshotStore.attach(restoring)
        rows = interleaved({
            # No shell row: the sandbox image has none (docs/security.md, "The root file
            # system"); the sandbox's own boot shows in `python -c pass`.
            "host   python -c pass": lambda: host(BARE),
            "gVisor python -c pass": lambda: sandbox(backend, BARE),
            "host   runner imports (polars, numpy)": lambda: host(IMPORTS),
            "gVisor runner imports (polars, numpy)": lambda: sandbox(backend, IMPORTS),
            "gVisor runner imports, no bytecode": lambda: sandbox(backend, IMPORTS, NO_PYC),
        }, n)
        rows.update(runner_rows(backend, restoring, Path(state), n))
    for name, seconds in rows.items():
        print(f"{name:48s} {seconds * 1000:8.1f} ms  (median of {n})")
    bare = rows["gVisor python -c pass"] / rows["host   python -c pass"]
    heavy = rows["gVisor runner imports (polars, numpy)"] / rows[
        "host   runner imports (polars, numpy)"]
    print(f"ratio gVisor / host, bare python:      {bare:5.1f}x")
    print(f"ratio gVisor / host, with the imports: {heavy:5.1f}x")
    nopyc = (rows["gVisor runner imports, no bytecode"]
             / rows["gVisor runner imports (polars, numpy)"])
    print(f"gVisor imports without / with the bytecode tree: {nopyc:5.2f}x")
    cold = rows[COLD] / rows[HOST_RUNNER]
    print(f"ratio cold gVisor job / host job, to the first strategy line: {cold:5.2f}x"
          "  (target <= 2x, and <= 1.5 s)")
    restored = rows[RESTORED] / rows[HOST_RUNNER]
    print(f"ratio restored gVisor job / host job, to the first strategy line: {restored:5.2f}x"
          f"  (target <= 2x, and <= 1.5 s; {rows[COLD] / rows[RESTORED]:.2f}x faster than cold)")
    print(f"warm pool, to the first strategy line: {rows[WARM] * 1000:.1f} ms  (target <= 150 ms)")
    print(f"ratio steady CPU-bound code, gVisor / host: {rows[CPU_IN] / rows[CPU_OUT]:5.2f}x"
          "  (target <= 1.1x)")
    print(f"load after: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
