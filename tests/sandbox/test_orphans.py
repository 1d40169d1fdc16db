"""Sandboxes of a worker killed with SIGKILL are destroyed when a backend next starts.

A real holder process starts a sandbox that would run for ten minutes, says so, and is
SIGKILLed together with the sandbox's supervisor (which would otherwise destroy it at
once: ``test_containment.py``); the sandbox keeps running, unwatched. The next backend
started on the same state dir (gVisor) or engine (Docker) must destroy it, while a live
process's sandbox is left running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sandbox_helpers import leftovers, supervisors_of

from pitwall.models import Limits
from pitwall_executor.sandbox.base import PYTHON, SandboxRequest
from pitwall_executor.sandbox.docker import OWNER_LABEL, DockerBackend
from pitwall_executor.sandbox.gvisor import GVisorBackend

pytestmark = pytest.mark.sandbox

LONG = Limits(timeout_s=600, memory_mb=256, pids=32, scratch_mb=8)
SLEEPER = "import sys, time; sys.stderr.write('up'); sys.stderr.flush(); time.sleep(600)"

HOLDER = """
import sys, time
from pathlib import Path
from pitwall.models import Limits
from pitwall_executor.sandbox.base import PYTHON, SandboxRequest
kind, state = sys.argv[1], Path(sys.argv[2])
if kind == "gvisor":
    from pitwall_executor.sandbox.gvisor import GVisorBackend as Backend
else:
    from pitwall_executor.sandbox.docker import DockerBackend as Backend
backend = Backend(state)
limits = Limits(timeout_s=600, memory_mb=256, pids=32, scratch_mb=8)
session = backend.start(SandboxRequest("orphan", (PYTHON, "-S", "-c", sys.argv[3]),
                                       limits=limits))
while session.first_stderr_at is None:
    time.sleep(0.05)
print(getattr(session, "container_id", None) or session.container_name, flush=True)
time.sleep(600)
"""


def orphan(kind: str, state: Path) -> str:
    """Start a holder process with a running sandbox, SIGKILL it and the sandbox's
    supervisor; the sandbox's name."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, kind, str(state), SLEEPER],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        name = holder.stdout.readline().strip()
        assert name.startswith("pitwall-"), name
    finally:
        for pid in [*supervisors_of(holder.pid), holder.pid]:
            os.kill(pid, signal.SIGKILL)
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    return name


def runsc_list(state: Path) -> list[str]:
    return subprocess.run(["runsc", "--root", str(state / "runsc"), "list", "-quiet"],
                          capture_output=True, text=True, check=True).stdout.split()


def test_gvisor_orphans_are_destroyed_and_live_ones_kept(tmp_path: Path) -> None:
    state = tmp_path / "shared-state"
    cid = orphan("gvisor", state)
    time.sleep(0.5)
    assert cid in runsc_list(state)  # the killed worker's sandbox still runs, unwatched
    # A live worker shares the state dir: its sandbox must survive the clean-up.
    live = GVisorBackend(state)
    with live.start(SandboxRequest("live", (PYTHON, "-S", "-c", SLEEPER), limits=LONG)) as mine:
        while mine.first_stderr_at is None:
            time.sleep(0.05)
        restarted = GVisorBackend(state)
        assert cid not in runsc_list(state)
        assert runsc_list(state) == [mine.container_id]
        assert restarted.destroy_orphans() == []  # idempotent
        assert mine.alive
        mine.kill()
    left = [x for x in leftovers(restarted) if cid in x or "orphan" in x]
    assert left == []
    assert list(Path("/sys/fs/cgroup").glob(f"*/{cid}")) == []  # runsc's and our memcg


@pytest.mark.docker
def test_docker_orphans_are_removed_and_live_ones_kept(tmp_path: Path,
                                                        docker_backend: DockerBackend) -> None:
    name = orphan("docker", tmp_path / "docker-state")
    client = docker_backend.client
    assert client.containers.get(name).status == "running"  # the killed worker's
    request = SandboxRequest("live", (PYTHON, "-S", "-c", SLEEPER), limits=LONG)
    with docker_backend.start(request) as mine:
        while mine.first_stderr_at is None:
            time.sleep(0.05)
        restarted = DockerBackend(tmp_path / "docker-state-2", client=client)
        names = [c.name for c in client.containers.list(all=True,
                                                         filters={"label": OWNER_LABEL})]
        assert name not in names
        assert mine.container_name in names and mine.alive
        mine.kill()
    assert restarted.destroy_orphans() == []
