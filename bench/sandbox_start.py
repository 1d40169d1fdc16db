"""Start-up cost of the gVisor sandbox, against bare Python on the host (DESIGN.md §5).

Measures, median of N runs, from "start" to "strategy code running": the time until the
first byte the child writes (a marker it prints as its first statement), for
``python -c`` and for the runner's imports (``pitwall`` → polars, numpy), on the host
(plain subprocess) and in gVisor (``GVisorBackend``). Run:
``.venv/bin/python bench/sandbox_start.py [N]``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from pitwall.models import Limits
from pitwall_executor.sandbox.base import PYTHON, SandboxRequest
from pitwall_executor.sandbox.gvisor import GVisorBackend

SDK = str(Path(__file__).resolve().parents[1] / "sdk")
BARE = "import os; os.write(2, b'up\\n')"
# What the runner pays before a strategy's first line runs: the SDK (polars) and numpy.
IMPORTS = "import pitwall.runner, pitwall.strategy, numpy; import os; os.write(2, b'up\\n')"


def host(code: str) -> float:
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-S", "-c", code], stderr=subprocess.PIPE,
                            env={"PYTHONPATH": SDK + ":" + _site_packages()})
    assert proc.stderr is not None
    proc.stderr.read(1)
    first = time.monotonic() - start
    proc.wait()
    return first


def sandbox(backend: GVisorBackend, code: str) -> float:
    out = backend.run(SandboxRequest("bench", (PYTHON, "-S", "-c", code), limits=Limits()))
    assert out.exit_code == 0 and out.start_s is not None, out
    return out.start_s


def _site_packages() -> str:
    return next(p for p in sys.path if p.endswith("site-packages"))


def median(fn: Callable[[], float], n: int) -> float:
    fn()  # warm the page cache
    return statistics.median(fn() for _ in range(n))


def main(n: int = 7) -> None:
    with tempfile.TemporaryDirectory(prefix="pitwall-bench-") as state:
        backend = GVisorBackend(Path(state))
        rows = {
            "host   python -c pass": median(lambda: host(BARE), n),
            "gVisor python -c pass": median(lambda: sandbox(backend, BARE), n),
            "host   runner imports (polars, numpy)": median(lambda: host(IMPORTS), n),
            "gVisor runner imports (polars, numpy)": median(lambda: sandbox(backend, IMPORTS), n),
        }
    for name, seconds in rows.items():
        print(f"{name:40s} {seconds * 1000:8.1f} ms  (median of {n})")
    bare = rows["gVisor python -c pass"] / rows["host   python -c pass"]
    heavy = rows["gVisor runner imports (polars, numpy)"] / rows[
        "host   runner imports (polars, numpy)"]
    print(f"ratio gVisor / host, bare python:      {bare:5.1f}x")
    print(f"ratio gVisor / host, with the imports: {heavy:5.1f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
