"""CPUs for lock-step (executor/pitwall_executor/sandbox/affinity.py): on one CPU the feeder
thread and every thread of its sandbox share a core; with a pair (the lane) each gets one;
claimed machine-wide, on both backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import docker
import pytest
from sandbox_helpers import Backend

from pitwall.models import Limits
from pitwall_executor.sandbox.affinity import CpuClaim, cpu_pair, shared_cpu, split_cpus
from pitwall_executor.sandbox.base import PYTHON, SandboxRequest
from pitwall_executor.sandbox.docker import DockerSession
from pitwall_executor.sandbox.gvisor import GVisorSession

pytestmark = pytest.mark.sandbox

ECHO = """
import os
while True:
    data = os.read(0, 64)
    if not data:
        break
    os.write(1, data.upper())
"""


def cpuset_dir(session: object) -> Path:
    """The sandbox's cpuset cgroup (cgroup v1, as on this host)."""
    root = Path("/sys/fs/cgroup/cpuset")
    if isinstance(session, GVisorSession):
        return root / session.container_id
    assert isinstance(session, DockerSession)
    cid = docker.from_env().containers.get(session.container_name).id  # names the cgroup
    found = list(root.glob(f"**/{cid}"))
    assert len(found) == 1, found
    return found[0]


def allowed(tid: int) -> str:
    for line in Path(f"/proc/{tid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split()[1]
    raise AssertionError(f"no Cpus_allowed_list for {tid}")


def test_the_feeder_thread_and_every_sandbox_thread_share_one_cpu(
        sandbox: Backend, tmp_path: Path) -> None:
    limits = Limits(timeout_s=30, memory_mb=256, pids=64, scratch_mb=8, output_mb=4, log_kb=4)
    request = SandboxRequest("pin", (PYTHON, "-S", "-c", ECHO), (), {}, limits)
    before = os.sched_getaffinity(0)
    with sandbox.start(request) as session:
        with shared_cpu(session, lock_dir=tmp_path) as cpu:
            assert cpu is not None and cpu in before
            assert os.sched_getaffinity(0) == {cpu}  # this (the feeder's) thread
            for i in range(50):  # lock-step still works, on one CPU
                session.stdin.write(f"bar {i}".encode())
                session.stdin.flush()
                assert session.stdout.read1(64) == f"BAR {i}".encode()
            group = cpuset_dir(session)
            assert (group / "cpuset.cpus").read_text().strip() == str(cpu)
            tids = [int(t) for t in (group / "tasks").read_text().split()]
            assert len(tids) >= 3  # the Sentry's threads, the gofer, the traced stub
            assert {allowed(t) for t in tids} == {str(cpu)}
        assert os.sched_getaffinity(0) == before  # restored for the worker's next job
        session.stdin.close()
        assert session.wait().ok


def test_with_a_pair_the_sandbox_and_the_feeder_each_get_one_cpu(
        sandbox: Backend, tmp_path: Path) -> None:
    limits = Limits(timeout_s=30, memory_mb=256, pids=64, scratch_mb=8, output_mb=4, log_kb=4)
    request = SandboxRequest("pair", (PYTHON, "-S", "-c", ECHO), (), {}, limits)
    before = os.sched_getaffinity(0)
    assert len(before) >= 2, "the lane's pair needs two CPUs; this host has one"
    with cpu_pair(tmp_path) as pair:
        assert pair is not None and pair[0] != pair[1] and set(pair) <= before
        with cpu_pair(tmp_path) as second:  # both held: another job gets none
            assert second is None or not set(second) & set(pair)
        with sandbox.start(request) as session:
            with split_cpus(session, pair):
                assert os.sched_getaffinity(0) == {pair[1]}  # the feeder's thread
                session.stdin.write(b"bar")
                session.stdin.flush()
                assert session.stdout.read1(64) == b"BAR"
                group = cpuset_dir(session)
                assert (group / "cpuset.cpus").read_text().strip() == str(pair[0])
                tids = [int(t) for t in (group / "tasks").read_text().split()]
                assert {allowed(t) for t in tids} == {str(pair[0])}
            assert os.sched_getaffinity(0) == before
            session.stdin.close()
            assert session.wait().ok
    with cpu_pair(tmp_path) as again:  # released: free for the next job
        assert again == pair


def test_each_job_claims_its_own_cpu_and_a_dead_holder_frees_it(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    claims = [CpuClaim.take(tmp_path) for _ in cpus]
    assert sorted(c.cpu for c in claims if c is not None) == cpus  # all distinct
    assert CpuClaim.take(tmp_path) is None  # every CPU taken: the next job runs unpinned
    assert claims[0] is not None
    claims[0].release()
    again = CpuClaim.take(tmp_path)
    assert again is not None and again.cpu == cpus[0]
    for claim in [again, *claims[1:]]:
        assert claim is not None
        claim.release()

    # Another process holds a CPU and is killed: its claim goes with it.
    code = ("import sys, time; from pathlib import Path\n"
            "from pitwall_executor.sandbox.affinity import CpuClaim\n"
            f"c = CpuClaim.take(Path({str(tmp_path)!r})); print(c.cpu, flush=True)\n"
            "time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    held = int(holder.stdout.readline())
    mine = [CpuClaim.take(tmp_path) for _ in cpus[1:]]
    assert held not in {c.cpu for c in mine if c is not None}
    assert CpuClaim.take(tmp_path) is None
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    freed = CpuClaim.take(tmp_path)
    assert freed is not None and freed.cpu == held
    for claim in [freed, *mine]:
        assert claim is not None
        claim.release()


def test_threads_claim_cpus_like_processes(tmp_path: Path) -> None:
    """Worker slots are threads of one process: each flock is its own open file, so two
    slots never get the same CPU."""
    got: list[int | None] = []
    barrier = threading.Barrier(2)

    def slot() -> None:
        claim = CpuClaim.take(tmp_path)
        got.append(None if claim is None else claim.cpu)
        barrier.wait()  # both hold their claim at the same time
        if claim is not None:
            claim.release()

    threads = [threading.Thread(target=slot) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 2 and None not in got and got[0] != got[1]


CPUSET = Path("/sys/fs/cgroup/cpuset")


def _groups() -> set[Path]:
    """The sandbox cpuset cgroups there are now (runsc's own, and Docker's)."""
    return {p for p in [*CPUSET.iterdir(), *(CPUSET / "docker").iterdir()] if p.is_dir()}


@pytest.mark.parametrize("cpus", [1.0, 2.0])
def test_a_one_cpu_run_gets_a_core_of_its_own_for_its_whole_run(
        sandbox: Backend, cpus: float) -> None:
    """A one-shot run under a 1-CPU quota is pinned, every thread of it, while it runs (its
    Sentry's and stubs' threads would otherwise spend the quota on two cores); a run
    allowed more CPUs is not; the claim is given back when the run ends."""
    limits = Limits(timeout_s=30, memory_mb=256, pids=64, scratch_mb=8, output_mb=4,
                    log_kb=4, cpus=cpus)
    code = "import time\ntime.sleep(1.5)\nprint('done')\n"
    request = SandboxRequest("pin-run", (PYTHON, "-S", "-c", code), (), {}, limits)
    before = _groups()
    outcome: list[object] = []
    run = threading.Thread(target=lambda: outcome.append(sandbox.run(request)))
    run.start()
    samples: list[tuple[str, set[str]]] = []  # (cpuset.cpus, every thread's allowed list)
    while run.is_alive():
        for group in _groups() - before:
            try:
                tids = [int(t) for t in (group / "tasks").read_text().split()]
                sample = ((group / "cpuset.cpus").read_text().strip(),
                          {allowed(t) for t in tids})
            except (OSError, AssertionError):  # the sandbox is ending under us
                continue
            if len(tids) >= 3:
                samples.append(sample)
        time.sleep(0.05)
    run.join()
    assert outcome and outcome[0].ok and outcome[0].stdout == b"done\n"  # type: ignore[attr-defined]
    assert samples, "never saw the sandbox's cgroup while it ran"
    every = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    if cpus > 1:
        assert all(cpuset != str(c) for cpuset, _ in samples for c in os.sched_getaffinity(0))
        return
    cpuset, threads = samples[-1]  # pinned after boot, before the strategy runs
    assert cpuset != every and cpuset.isdigit(), samples
    assert threads == {cpuset}, samples
    claims = [CpuClaim.take() for _ in os.sched_getaffinity(0)]
    try:
        assert None not in claims  # the run gave its CPU back
    finally:
        for claim in claims:
            if claim is not None:
                claim.release()
