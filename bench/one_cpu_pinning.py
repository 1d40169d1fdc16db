"""A 1-CPU sandbox with and without a core of its own (``sandbox/affinity.py: own_cpu``).

Under a 1-CPU quota the Sentry's and the platform's (systrap stub) threads count against
the job. This runs the same strategy-like loop in a gVisor sandbox with ``cpus=1``,
unpinned and pinned to one claimed CPU, alternating (round robin), each with the other
core idle and with it busy (a host process spinning on the other CPU). Three loops: one
that asks the kernel for its CPU time each turn (``time.process_time()``, a trapped
syscall: the worst case) until 2 s of CPU, a pure-Python loop of fixed work, and polars
work like a vectorized strategy's (its thread pool sized by the CPUs gVisor shows).
Prints the median wall time of each and the unpinned/pinned ratio.
Run: ``.venv/bin/python bench/one_cpu_pinning.py [N]``.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pitwall.models import Limits
from pitwall_executor.sandbox import affinity
from pitwall_executor.sandbox.base import PYTHON, SandboxRequest
from pitwall_executor.sandbox.gvisor import GVisorBackend

LOOPS = {
    "2 s of CPU, process_time() each turn": (
        "import time\nt0 = time.process_time(); w0 = time.monotonic()\n"
        "while time.process_time() - t0 < 2.0:\n    pass\n"
        "print(time.monotonic() - w0)\n"),
    "pure-Python loop, 20M additions": (
        "import time\nw0 = time.monotonic(); x = 0\n"
        "for i in range(20_000_000):\n    x += i\n"
        "print(time.monotonic() - w0)\n"),
    "polars: two rolling means over 10 symbols x 200k bars, 5 times": (
        "import time\nimport numpy as np\nimport polars as pl\n"
        "rng = np.random.default_rng(0)\n"
        "df = pl.DataFrame({'s': np.repeat(np.arange(10), 200_000),\n"
        "                   'x': rng.standard_normal(2_000_000).cumsum()})\n"
        "w0 = time.monotonic()\n"
        "for _ in range(5):\n"
        "    df.with_columns(f=pl.col('x').rolling_mean(30).over('s'),\n"
        "                    g=pl.col('x').rolling_mean(240).over('s'))"
        ".select((pl.col('f') > pl.col('g')).mean())\n"
        "print(time.monotonic() - w0)\n"),
}


def wall(backend: GVisorBackend, code: str, pin: bool, lock_dir: Path) -> float:
    """Wall time of ``code``'s loop, as the sandbox's own clock measured it."""
    request = SandboxRequest("pin-bench", (PYTHON, "-S", "-c", code), limits=Limits(cpus=1))
    session = backend.start(request)
    with affinity.own_cpu(session, lock_dir) if pin else contextlib.nullcontext() as cpu:
        assert not pin or cpu is not None, "could not pin the sandbox"
        out = session.collect(request)
    assert out.ok, out
    return float(out.stdout)


@contextlib.contextmanager
def busy(cpu: int | None) -> Iterator[None]:
    """A host process spinning on ``cpu`` (None: nothing)."""
    if cpu is None:
        yield
        return
    hog = subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        hog.kill()
        hog.wait()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    cpus = sorted(os.sched_getaffinity(0))
    assert len(cpus) >= 2, "needs two CPUs"
    backend = GVisorBackend(state_dir=Path(tempfile.mkdtemp(prefix="pitwall-pin-bench-")))
    lock_dir = Path(tempfile.mkdtemp(prefix="pitwall-pin-locks-"))  # claims CPU 0 first
    print(f"load before: {[f'{x:.2f}' for x in os.getloadavg()]}")
    for label, code in LOOPS.items():
        for other, hog in (("other core idle", None), ("other core busy", cpus[1])):
            runs: dict[bool, list[float]] = {False: [], True: []}
            with busy(hog):
                for _ in range(n):
                    for pin in (False, True):
                        runs[pin].append(wall(backend, code, pin, lock_dir))
            loose, pinned = statistics.median(runs[False]), statistics.median(runs[True])
            print(f"{label}, {other}: unpinned {loose:.3f} s, pinned {pinned:.3f} s "
                  f"→ unpinned/pinned {loose / pinned:.2f}x  (median of {n})", flush=True)
    print(f"load after: {[f'{x:.2f}' for x in os.getloadavg()]}")


if __name__ == "__main__":
    main()
