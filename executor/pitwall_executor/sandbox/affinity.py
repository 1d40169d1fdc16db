"""CPUs for a lock-step pair: two of its own (the lane), else one shared core.

With two free CPUs (:func:`cpu_pair`) an event job's sandbox and feeder each get one and
watch the shared-memory lane (``pitwall.lane``, docs/architecture.md §5 "The lane"):
no system call and no wake-up per step while both are watching. Without two, the pair
shares one core over the pipes, as follows.

Strict lock-step is sequential by construction: the feeder waits for the strategy's
answer, the strategy waits for the next bar, so the pair never needs two CPUs at once.
Spread over two CPUs, every step pays two cross-CPU wake-ups (one per direction), and in
a VM waking an idle vCPU is the most expensive thing on the path: unpinned, a bare echo
through gVisor is slower and bimodal (by where the scheduler put the threads); on one
CPU it is steady. Polling the pipes instead of blocking was tried: on one CPU it starves
the peer; on two it is no better than pinning while it burns both cores (each poll is
still a trapped system call; watching the lane's memory is not). The figures:
docs/benchmarks.md, "One CPU for the lock-step pair".

Each lock-step job claims a CPU machine-wide with an ``flock`` on ``<dir>/cpu-<k>.lock``
(released when the job ends or its process dies), so two workers never pin their jobs
to the same core while another sits idle; with every CPU claimed the job runs unpinned.
The sandbox is pinned through its cgroup's ``cpuset.cpus`` (every thread of the Sentry,
the gofer and the traced stubs, including threads started later); the feeder thread with
``sched_setaffinity`` on itself, restored afterwards.

One-shot runs of at most one CPU (the vectorized runner, :func:`one_cpu_run`) claim and
pin a CPU the same way, for the sandbox alone. Under a CPU quota the Sentry's and the
systrap stubs' threads count against the job: spread over an idle second core they spin
side by side and spend the quota twice, so a job making system calls runs markedly slower
unpinned while compute-bound loops show no difference beyond the noise
(docs/benchmarks.md, ``bench/one_cpu_pinning.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

#: Where the per-CPU claim files live (one machine-wide directory).
LOCK_DIR = Path(tempfile.gettempdir()) / "pitwall-cpus"
CPUSET_ROOTS = (Path("/sys/fs/cgroup/cpuset"), Path("/sys/fs/cgroup"))  # cgroup v1, v2


class CpuClaim:
    """One CPU held by this job until :meth:`release` (or the process's death)."""

    def __init__(self, cpu: int, fd: int) -> None:
        self.cpu = cpu
        self._fd: int | None = fd

    @classmethod
    def take(cls, lock_dir: Path = LOCK_DIR) -> CpuClaim | None:
        """The first CPU this process may run on that no other job holds, or None."""
        lock_dir.mkdir(parents=True, exist_ok=True)
        for cpu in sorted(os.sched_getaffinity(0)):
            fd = os.open(lock_dir / f"cpu-{cpu}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return cls(cpu, fd)
        return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None


def _cpus_file(name: str) -> Path | None:
    for root in CPUSET_ROOTS:
        path = root / name.strip("/") / "cpuset.cpus"
        if path.exists():
            return path
    return None


def cgroup_exists(name: str) -> bool:
    """Whether the cpuset cgroup ``name`` exists (yet)."""
    return _cpus_file(name) is not None


def pin_cgroup(name: str, cpu: int) -> bool:
    """Restrict the cgroup ``name`` (relative to the cpuset hierarchy) to ``cpu``.

    False when the host has no such cpuset cgroup (the sandbox is then left unpinned).
    """
    path = _cpus_file(name)
    if path is None:
        return False
    try:
        path.write_text(str(cpu))
    except OSError as exc:
        log.warning("could not pin cgroup %s to CPU %d: %s", name, cpu, exc)
        return False
    return True


@contextlib.contextmanager
def own_cpu(session: object, lock_dir: Path = LOCK_DIR) -> Iterator[int | None]:
    """Pin ``session``'s sandbox to a CPU claimed for the body (the rest of its run).

    Yields the CPU, or None when none was free or the session cannot be pinned (the
    sandbox then runs where the scheduler puts it: correct, only slower).
    """
    pin = getattr(session, "pin_cpu", None)
    claim = CpuClaim.take(lock_dir) if pin is not None else None
    if pin is None or claim is None:
        yield None
        return
    try:
        yield claim.cpu if pin(claim.cpu) else None
    finally:
        claim.release()


@contextlib.contextmanager
def one_cpu_run(session: object, cpus: float) -> Iterator[int | None]:
    """A one-shot run of at most one CPU (``limits.cpus``) on a core of its own."""
    if cpus > 1:
        yield None
        return
    with own_cpu(session) as cpu:
        yield cpu


@contextlib.contextmanager
def shared_cpu(session: object, lock_dir: Path = LOCK_DIR) -> Iterator[int | None]:
    """Run the body (the feeder's loop) on one CPU together with ``session``'s sandbox.

    Yields the CPU, or None as :func:`own_cpu` does.
    """
    with own_cpu(session, lock_dir) as cpu:
        if cpu is None:
            yield None
            return
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {cpu})  # pid 0: this thread only
        try:
            yield cpu
        finally:
            os.sched_setaffinity(0, before)


@contextlib.contextmanager
def cpu_pair(lock_dir: Path = LOCK_DIR) -> Iterator[tuple[int, int] | None]:
    """Two CPUs claimed for a lock-step job over the shared-memory lane (``pitwall.lane``):
    its sandbox and its feeder each watch the lane on a core of their own, where on one
    shared core watching would starve the peer. Yields ``(sandbox_cpu, feeder_cpu)``, or
    None when two are not free (the job then shares one CPU over the pipes)."""
    first = CpuClaim.take(lock_dir)
    second = CpuClaim.take(lock_dir) if first is not None else None
    try:
        yield (first.cpu, second.cpu) if first is not None and second is not None else None
    finally:
        for claim in (first, second):
            if claim is not None:
                claim.release()


@contextlib.contextmanager
def split_cpus(session: object, cpus: tuple[int, int]) -> Iterator[None]:
    """Run ``session``'s sandbox on ``cpus[0]`` and the body (the feeder) on ``cpus[1]``."""
    pin = getattr(session, "pin_cpu", None)
    if pin is not None:
        pin(cpus[0])
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[1]})  # pid 0: this thread only
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
