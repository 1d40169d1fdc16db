"""A warm pool of gVisor sandboxes (docs/architecture.md §5): start-up paid before the job exists.

Each slot is a sandbox started with ``python -m pitwall.sandbox.runner --warm /job``: it imports
NumPy, polars and pyarrow, says "ready" on its channel and blocks on stdin. Its
``/job/bundle`` and ``/job/input`` are the slot's *own* empty host directories, mounted
read-only (a mount cannot be added to a running sandbox). To serve a job the pool
hard-links the job's files into them (a copy across file systems), starts the job's
wall clock and writes "go"; the runner then reads them exactly as in a cold run. A slot
serves one job and is destroyed with its directories; a background thread refills the
pool. A refill restores the backend's checkpoint of a warm runner (:mod:`.snapshot`,
the image for the pool's limits) instead of booting and importing: the restored runner
said "ready" before its checkpoint, so the slot sends "ping" and counts as ready only
once the restored process answers "ready" and its CPU quota is the job's again
(``Restoring.settle``). A refill whose restore fails is logged, the image dropped, and
the next refill boots cold. Filling the mounts is a few hard links, while shipping the
bars over the pipe would cost a copy through gVisor per byte and double the bars in the
sandbox's memory; hence the mount design (the warm row of docs/benchmarks.md, "Sandbox",
includes the filling).

Isolation: a slot's directories exist only for that slot and hold nothing until its one
job is handed over, so a sandbox never sees another job's files. Only requests built by
:func:`runner_request` whose baked-in limits (memory, pids, CPUs, scratch) match the
pool's are served warm; anything else runs cold on the wrapped backend, unchanged.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

from pitwall.models import Limits
from pitwall.sandbox.runner import GO_LINE, READY_LINE
from pitwall_executor.sandbox import affinity, orphans, owner
from pitwall_executor.sandbox.base import JOB_ROOT, SandboxOutcome, SandboxRequest
from pitwall_executor.sandbox.capture import HeadBuffer
from pitwall_executor.sandbox.checkpoint import (
    BAKED_LIMITS,
    JOB_DIRS,
    RUNNER_ARGV,
    WARM_ARGV,
    Restoring,
    SnapshotStore,
    empty_job_mounts,
)
from pitwall_executor.sandbox.gvisor import GVisorBackend, GVisorSession

log = logging.getLogger(__name__)
_RETRY_S = 2.0
_READY_TIMEOUT_S = 30.0


class _Slot:
    """One pre-started sandbox, its private mount dirs and its stdout drain."""

    def __init__(self, backend: GVisorBackend, root: Path, limits: Limits,
                 snapshots: SnapshotStore | None = None, image: Path | None = None) -> None:
        self.dir = root / f"slot-{uuid.uuid4().hex[:12]}"
        mounts = empty_job_mounts(self.dir)
        request = SandboxRequest(f"warm-{self.dir.name}", WARM_ARGV, mounts, {}, limits)
        self.started = time.monotonic()
        #: The checkpoint this slot was restored from; None: booted cold.
        self.image = image if snapshots is not None else None
        self._restoring: Restoring | None = None
        try:
            if self.image is not None and snapshots is not None:
                self._restoring = snapshots.restore(request, self.image, arm=False)
                self.session: GVisorSession = self._restoring.session
            else:
                self.session = backend.launch(request, arm=False)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise
        self.ready = threading.Event()
        self.ready_at: float | None = None
        self._sink: HeadBuffer | None = None
        self._go = threading.Event()
        self.first_byte_at: float | None = None
        self._drain = threading.Thread(target=self._read, daemon=True, name="warm-drain")
        self._drain.start()

    def _read(self) -> None:
        stdout = self.session.stdout
        fd = stdout.fileno()
        try:
            line = b""
            while len(line) < len(READY_LINE) and (byte := os.read(fd, 1)):
                line += byte  # unbuffered: not a byte of the job's output is read ahead
            if line != READY_LINE:
                return  # died while importing or restoring: the slot is useless
            if self._restoring is not None and not self._restoring.settle():
                self.session.kill()  # never "go" without the job's CPU quota
                return
            self.ready_at = time.monotonic()
            self.ready.set()
            self._go.wait()
            if self._sink is None:
                return  # destroyed without a job
            while chunk := os.read(fd, 64 * 1024):
                if self.first_byte_at is None:
                    self.first_byte_at = time.monotonic()
                self._sink.feed(chunk)
        except (OSError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                stdout.close()

    def serve(self, request: SandboxRequest) -> SandboxOutcome:
        """Run the job: fill the mounts, start its clock, say go, collect the outcome."""
        taken = time.monotonic()
        session = self.session
        session.arm(request.limits.timeout_s)
        try:
            for mount in request.mounts:
                _fill(mount.source, self.dir / mount.target.rsplit("/", 1)[1])
            self._sink = HeadBuffer(request.limits.output_mb * 1024 * 1024)
            self._go.set()
            session.stdin.write(GO_LINE)
            session.stdin.flush()
        except OSError:
            pass  # the sandbox died meanwhile: its outcome says how
        finally:
            self._go.set()
        outcome = session.wait()
        self._drain.join(timeout=5)
        self.destroy()
        sink = self._sink or HeadBuffer(0)
        first = [t for t in (self.first_byte_at, session.first_stderr_at) if t is not None]
        return dataclasses.replace(
            outcome, stdout=sink.getvalue(), stdout_truncated=sink.truncated,
            duration_s=time.monotonic() - taken,
            start_s=(min(first) - taken) if first else None,
        )

    def destroy(self) -> None:
        """Kill the sandbox if it still runs, then remove its directories."""
        if not self._done():
            self.session.kill()
            self.session.wait()
        self._go.set()
        self._drain.join(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def wait_ready(self, timeout: float) -> bool:
        """Block until the slot is ready, or has died, or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.02):
            if not self.session.alive or time.monotonic() > deadline:
                return self.ready.is_set()
        return True

    def _done(self) -> bool:
        try:
            self.session.wait(0)
        except TimeoutError:
            return False
        return True


def _fill(source: Path, dest: Path) -> None:
    """Hard-link (or copy) a job dir's contents into a slot's dir; links stay links."""
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another file system, or links not allowed: copy
            shutil.copy2(src, dst)

    shutil.copytree(source, dest, symlinks=True, copy_function=link, dirs_exist_ok=True)


class WarmPool:
    """Keeps ``size`` warm sandboxes with ``limits`` baked in; refills in the background,
    restoring ``snapshots``' image for those limits when given, else booting."""

    def __init__(self, backend: GVisorBackend, size: int, limits: Limits, root: Path, *,
                 snapshots: SnapshotStore | None = None) -> None:
        self._backend, self.size, self.limits = backend, size, limits
        self._snapshots = snapshots
        orphans.reap_pools(root)  # dead pools' dirs may hold old jobs' files
        # One dir per pool, named after its owner: several worker processes may share a
        # data dir, and reap_orphans removes a dead one's.
        self._root = root / f"{orphans.POOL_PREFIX}{owner.current().token}-{uuid.uuid4().hex[:8]}"
        self._root.mkdir(parents=True)
        root.chmod(0o755)
        self._root.chmod(0o755)
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()
        self._cold_next = False
        #: Each refill that got ready: ("restored" | "cold", seconds from start to ready).
        self.refills: list[tuple[str, float]] = []
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._filler = threading.Thread(target=self._fill_loop, daemon=True, name="warm-pool")
        self._filler.start()
        atexit.register(self.close)

    def fits(self, request: SandboxRequest) -> bool:
        targets = sorted(m.target for m in request.mounts)
        return (request.argv == RUNNER_ARGV and not request.env
                and targets == [f"{JOB_ROOT}/{d}" for d in JOB_DIRS]
                and all(getattr(request.limits, k) == getattr(self.limits, k)
                        for k in BAKED_LIMITS))

    def take(self) -> _Slot | None:
        """A ready slot (removed from the pool), or None; wakes the refill thread."""
        with self._lock:
            slot = next((s for s in self._slots if s.ready.is_set() and s.session.alive), None)
            if slot is not None:
                self._slots.remove(slot)
        self._wake.set()
        return slot

    def ready_count(self) -> int:
        with self._lock:
            return sum(1 for s in self._slots if s.ready.is_set() and s.session.alive)

    def wait_ready(self, n: int, timeout: float) -> bool:
        """Block until ``n`` slots are ready (benchmarks and tests)."""
        deadline = time.monotonic() + timeout
        while self.ready_count() < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _fill_loop(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                dead = [s for s in self._slots if not s.session.alive]
                self._slots = [s for s in self._slots if s.session.alive]
                missing = self.size - len(self._slots)
            for slot in dead:
                slot.destroy()
            if missing > 0:
                self._refill()
                continue
            self._wake.wait(1.0)
            self._wake.clear()

    def _refill(self) -> None:
        """Start one slot, restored when the store has an image for the pool's limits,
        and wait for it: one start at a time, they compete for the CPUs."""
        store, image = self._snapshots, None
        if store is not None and not self._cold_next:
            image = store.image(self.limits)  # built here the first time
        self._cold_next = False
        try:
            slot = _Slot(self._backend, self._root, self.limits, store, image)
        except Exception:  # the runtime failed: log, back off, try again
            log.exception("warm pool: starting a sandbox failed")
            self._closed.wait(_RETRY_S)
            return
        with self._lock:
            self._slots.append(slot)
        if slot.wait_ready(_READY_TIMEOUT_S) and slot.ready_at is not None:
            kind = "cold" if slot.image is None else "restored"
            self.refills.append((kind, slot.ready_at - slot.started))
        elif slot.image is not None and store is not None and not self._closed.is_set():
            store.failed(slot.image, slot.session, "a warm-pool slot did not get ready")
            self._cold_next = True

    def close(self) -> None:
        """Destroy every idle slot; idempotent."""
        self._closed.set()
        self._wake.set()
        self._filler.join(timeout=35)
        with self._lock:
            slots, self._slots = self._slots, []
        for slot in slots:
            slot.destroy()
        shutil.rmtree(self._root, ignore_errors=True)


class PooledBackend:
    """A :class:`GVisorBackend` whose runner requests are served by a :class:`WarmPool`
    when a fitting slot is ready, and cold otherwise; same contract as the backend."""

    def __init__(self, backend: GVisorBackend, pool: WarmPool) -> None:
        self.inner, self.pool = backend, pool
        self.name = backend.name
        self._active: dict[str, _Slot] = {}
        self._lock = threading.Lock()

    def run(self, request: SandboxRequest) -> SandboxOutcome:
        slot = self.pool.take() if self.pool.fits(request) else None
        if slot is None:
            return self.inner.run(request)
        with self._lock:
            self._active[request.job_id] = slot
        try:
            with affinity.one_cpu_run(slot.session, request.limits.cpus):
                return slot.serve(request)
        finally:
            with self._lock:
                self._active.pop(request.job_id, None)

    @property
    def image(self) -> str:
        return self.inner.image

    @property
    def lanes(self) -> bool:
        """Whether live sessions may map a lane: the wrapped backend's (``gvisor.py``)."""
        return bool(getattr(self.inner, "lanes", False))

    def start(self, request: SandboxRequest) -> GVisorSession:
        return self.inner.start(request)

    def kill(self, job_id: str) -> None:
        with self._lock:
            slot = self._active.get(job_id)
        if slot is not None:
            slot.session.kill()
        self.inner.kill(job_id)

    def close(self) -> None:
        self.pool.close()
