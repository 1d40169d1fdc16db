"""What the sandbox suites share: limits, a strategy, a job's directories, a probe."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from pitwall.models import Limits
from pitwall_executor.sandbox import owner
from pitwall_executor.sandbox.docker import JOB_LABEL, DockerBackend
from pitwall_executor.sandbox.gvisor import GVisorBackend

Backend = GVisorBackend | DockerBackend

FAST = Limits(timeout_s=20, memory_mb=256, pids=64, scratch_mb=8, output_mb=4, log_kb=64)


def host_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP connect sends nothing; it picks a route
            return str(s.getsockname()[0])
        except OSError:
            return None


@contextlib.contextmanager
def host_listener() -> Iterator[tuple[socket.socket, list[tuple[str, int]]]]:
    """A TCP listener on every host address and the places a sandbox might reach it by
    (loopback, the host's own IP) plus a public DNS server: none may ever connect."""
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        targets = [("127.0.0.1", port), ("1.1.1.1", 53)]
        if (ip := host_ip()) is not None:
            targets.append((ip, port))
        yield listener, targets


SMA = '''
import polars as pl
import pitwall

@pitwall.vectorized
def sma_cross(bars: pl.DataFrame, fast: int = 3, slow: int = 8) -> pl.DataFrame:
    print("computing", fast, slow)  # goes to the log, not to the result channel
    return bars.select(
        "ts", "symbol",
        weight=pl.when(pl.col("close").rolling_mean(fast).over("symbol")
                       > pl.col("close").rolling_mean(slow).over("symbol"))
        .then(0.5).otherwise(0.0),
    )
'''


def make_job(tmp_path: Path, source: str, params: dict[str, int],
             ) -> tuple[Path, Path, pl.DataFrame]:
    bundle, inputs = tmp_path / "bundle", tmp_path / "input"
    bundle.mkdir()
    inputs.mkdir()
    (bundle / "strategy.py").write_text(source)
    start = dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC)
    ts = [start + dt.timedelta(minutes=i) for i in range(40)]
    bars = pl.DataFrame({
        "ts": ts * 2, "symbol": ["AAA"] * 40 + ["BBB"] * 40,
        "close": [100 + (i % 7) * 0.5 + i * 0.1 for i in range(40)]
        + [50 - i * 0.2 for i in range(40)],
    }).with_columns(open=pl.col("close"), high=pl.col("close") + 1, low=pl.col("close") - 1,
                    volume=pl.lit(1000.0)).with_columns(pl.col("ts").dt.cast_time_unit("us"))
    bars.write_ipc(inputs / "bars.arrow")
    spec = {"entrypoint": "strategy.py:sma_cross", "params": params, "seed": 7}
    (inputs / "spec.json").write_text(json.dumps(spec))
    return bundle, inputs, bars


def leftovers(backend: GVisorBackend) -> list[str]:
    """Everything a finished run could have left behind on the host."""
    found: list[str] = []
    state = str(backend.runsc_root.parent)
    listing = subprocess.run(["runsc", "--root", str(backend.runsc_root), "list", "-quiet"],
                             capture_output=True, text=True, check=True).stdout.split()
    found += [f"container {c}" for c in listing]
    found += [f"state file {p.name}" for p in backend.runsc_root.iterdir()]
    found += [f"job dir {p.name}" for p in (backend.runsc_root.parent / "jobs").iterdir()]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and proc.name != str(os.getpid()):
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if state in cmd:
                found.append(f"process {proc.name}: {cmd[:120]}")
    found += [f"mount {ln}" for ln in Path("/proc/self/mountinfo").read_text().splitlines()
              if state in ln]
    # Cgroups are host-wide: count only those of sandboxes this process started (the
    # container id names its owner), not another session's running at the same time.
    mine = f"pitwall-{owner.current().token}-*"
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob(f"*/{mine}")]
    return found


def docker_leftovers(backend: DockerBackend) -> list[str]:
    containers = backend.client.containers.list(all=True, filters={"label": JOB_LABEL})
    return [f"container {c.name} ({c.status})" for c in containers]
