"""What the sandbox suites share: limits, a strategy, a job's directories, a probe."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import polars as pl

from pitwall.models import Limits
from pitwall_executor.sandbox import orphans, owner, supervisor
from pitwall_executor.sandbox.docker import JOB_LABEL, OWNER_LABEL, DockerBackend
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


#: A runner strategy that says so on stderr, then sleeps far past any limit of the tests.
SLEEPY = SMA.replace('print("computing", fast, slow)',
                     'import sys, time; print("up", file=sys.stderr, flush=True); '
                     'time.sleep(600)')


def supervisors_of(pid: int) -> list[int]:
    """The sandbox supervisors (``sandbox/supervisor.py``) started by process ``pid``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_bytes()
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        if ppid == pid and b"supervisor.py" in cmd:
            found.append(int(proc.name))
    return found


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP): state ``T``."""
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return stat.rsplit(b")", 1)[1].split()[0] == b"T"


def live_processes(needle: str) -> list[str]:
    """The live processes (zombies aside) whose command line holds ``needle``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle.encode() in cmd and state != b"Z":
            found.append(f"{proc.name}: {cmd[:100]!r}")
    return found


class WorkerSandboxes:
    """The sandboxes a worker process (``pid``) runs over a data dir, and everything of
    them on the host: what must be gone within seconds of the worker's death."""

    def __init__(self, kind: str, data_dir: Path, pid: int) -> None:
        self.kind, self.data_dir, self.pid = kind, data_dir, pid
        #: Per container seen: its id, overlay dir and network namespace (host mounts).
        self.traces: dict[str, list[str]] = {}

    def running(self, job: str | None = None) -> list[str]:
        """Its running sandboxes (runsc ids, container names); with ``job``, only the one
        running that job (on a warm-pool slot: the slot holding the job's bars)."""
        if self.kind == "docker":
            client = docker.from_env()
            try:
                found = [c for c in client.containers.list(filters={"status": "running"})
                         if c.labels.get(OWNER_LABEL, "").startswith(f"{self.pid}-")
                         and job in (None, c.labels.get(JOB_LABEL))]
            finally:
                client.close()
            for c in found:
                self.traces[str(c.name)] = [str(c.id),
                                            c.attrs["GraphDriver"]["Data"]["MergedDir"],
                                            c.attrs["NetworkSettings"]["SandboxKey"]]
            return [str(c.name) for c in found]
        served = {p.parts[-3] for p in
                  (self.data_dir / "sandbox-pool").glob("pool-*/slot-*/input/bars.arrow")}
        slug = re.sub(r"[^A-Za-z0-9_.-]", "-", job or "")[:32]
        return [cid for cid in orphans.runsc_ids(self.data_dir / "sandbox")
                if (who := owner.named(cid, orphans.CID_PREFIX)) is not None
                and who.pid == self.pid and supervisor.runsc_processes(cid)
                and (job is None or f"-{slug}-" in cid
                     or any(f"-warm-{slot}-" in cid for slot in served))]

    def remains(self, names: list[str], *paths: Path) -> list[str]:
        """Everything of these sandboxes still on the host, and any mount of ``paths``."""
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
        marks = [*names, *map(str, paths)]
        marks += [t for n in names for t in self.traces.get(n, []) if t]
        found = [f"mount {ln}" for ln in mounts for m in marks if m in ln]
        if self.kind == "docker":
            found += [f"process {p}" for n in names for p in live_processes(self.traces[n][0])]
            client = docker.from_env()
            try:
                for name in names:
                    with contextlib.suppress(docker.errors.NotFound):
                        found.append(f"container {name} "
                                     f"({client.containers.get(name).status})")
            finally:
                client.close()
            return found
        state = self.data_dir / "sandbox"
        for cid in names:
            found += [f"process {p}" for p in live_processes(cid)]  # its supervisor too
            found += [f"cgroup {p}" for p in supervisor.cgroup_dirs(cid)]
            found += [f"runsc state {p.name}" for p in (state / "runsc").glob(f"*{cid}*")]
            if (state / "jobs" / cid).exists():
                found.append(f"bundle dir {cid}")
        return found

    def wait_gone(self, names: list[str], within: float, *paths: Path) -> float:
        """Seconds until nothing of ``names`` is left; fails after ``within``."""
        t0 = time.monotonic()
        while left := self.remains(names, *paths):
            assert time.monotonic() - t0 < within, left
            time.sleep(0.05)
        return time.monotonic() - t0
