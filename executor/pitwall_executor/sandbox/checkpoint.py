"""Cold runner jobs restored from a checkpoint of a warm sandbox (gVisor save/restore).

A cold gVisor job pays the sandbox's boot and the thousands of trapped system calls of
the runner's imports (docs/benchmarks.md, "Where the rest goes"). Here that is paid
once: a sandbox is started as a warm-pool slot would be
(``python -m pitwall.sandbox.runner --warm /job``: libraries imported, "ready" said,
blocked on stdin, its ``/job`` mounts empty directories that are deleted afterwards),
then saved with ``runsc checkpoint``, which ends it. Each cold runner job is then a
*new* sandbox, ``runsc restore`` of that image under a new container id with the job's
own bundle: the job's directories are mounted at ``/job/bundle`` and ``/job/input``
exactly as in a plain cold run (a restored sandbox takes its mounts, cgroups and limits
from the new bundle; its memory from the image), and the job starts when the worker
writes "go". Nothing ran in it before but the runner's imports, and the image holds no
job data: the same isolation as a cold start.

The restore is platform work, not the job's: it runs with the worker's CPU budget. The
sandbox's cgroup is created by runsc with the job's CPU quota; once runsc has written
it, the quota is lifted (``-1``: bounded by the worker's own cgroup; the batch weight,
``cpu.shares``, stays), the restored runner is asked to say "ready" again ("ping": it
said it before the checkpoint, so only the answer proves the restored process is up and
reading stdin), then the job's quota is written back and read back, and only then is
"go" written: no line of the job runs without its quota. A restore that never answers
is a failed restore: no job code ran, so the job is run plain cold.

Why: a restored job reaches its first strategy line in a fraction of a plain cold
start's time, close to the same job on the host once the image is written uncompressed
(``GVisorBackend.checkpoint_flags``); a restore's time grows with the image (the
runner's memory runsc loads), and under the job's CPU quota runsc itself was throttled,
which lifting the quota removes. The figures, the commands that produced them and where
a restore's time goes: docs/benchmarks.md, "Sandbox", the restored cold start.

The image is built lazily by the first fitting request (which pays for it once) and
stored under the backend's state dir, keyed by the digest of the sandbox image it was
taken on (``rootfs.py``: interpreter, libraries, SDK, bytecode), the runsc version, the
flags and the limits baked into a running sandbox (memory, pids, CPUs, scratch size). A
restore that fails is logged, the image dropped (rebuilt by the next request) and the job
run plain cold; after :data:`_MAX_FAILURES` failures the store turns itself off for this
process.

Determinism: the runner seeds ``random`` and NumPy, and installs the simulated clock,
when the job starts (after "go"), not at import, so a restored job is seeded as a cold
one. The sandbox's real clocks are the host's after a restore; ``os.urandom`` is fresh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import select
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Self

from pitwall.errors import SandboxError
from pitwall.models import Limits
from pitwall.sandbox.runner import GO_LINE, PING_LINE, READY_LINE, WARM_FLAG
from pitwall_executor.sandbox import affinity, oci, orphans, owner
from pitwall_executor.sandbox.base import (
    JOB_ROOT,
    PYTHON,
    SCRATCH,
    Mount,
    SandboxOutcome,
    SandboxRequest,
)
from pitwall_executor.sandbox.gvisor import GVisorBackend, GVisorSession

log = logging.getLogger(__name__)

RUNNER_ARGV = (PYTHON, "-S", "-m", "pitwall.sandbox.runner", JOB_ROOT)
WARM_ARGV = (PYTHON, "-S", "-m", "pitwall.sandbox.runner", WARM_FLAG, JOB_ROOT)
#: The job's directories a runner reads, mounted read-only under ``/job``.
JOB_DIRS = ("bundle", "input")
#: A live session's lane dir (``pitwall.lane``), mounted read-write; its images are
#: kept apart from the others' (their names start with :data:`LANE_PREFIX`).
CHANNEL_DIR = "channel"
LANE_DIRS = ("bundle", "channel", "input")
LANE_PREFIX = "lane-"
#: The limits fixed inside a running sandbox (a warm or restored one serves only these).
BAKED_LIMITS = ("memory_mb", "pids", "cpus", "scratch_mb")
_BUILD_TIMEOUT_S = 120.0
#: How long a restore may take before it counts as failed (it takes well under 1 s).
RESTORE_TIMEOUT_S = 30.0
_MAX_FAILURES = 2
_CPU_CGROUP = Path("/sys/fs/cgroup/cpu")
#: How long to wait for runsc to write the job's quota before lifting it (else: not lifted).
_QUOTA_WAIT_S = 1.0


def empty_job_mounts(root: Path, dirs: tuple[str, ...] = JOB_DIRS) -> tuple[Mount, ...]:
    """Empty ``root/bundle`` and ``root/input`` (readable by the sandbox's user), mounted
    read-only at ``/job/…``: a warm runner's mounts before any job exists; with
    :data:`LANE_DIRS`, also an empty ``channel`` dir mounted read-write (only root may
    create a file in it)."""
    for name in dirs:
        (root / name).mkdir(parents=True)
        (root / name).chmod(0o755)
    root.chmod(0o755)
    return tuple(Mount(root / name, f"{JOB_ROOT}/{name}", readonly=name != CHANNEL_DIR)
                 for name in dirs)


def job_dirs(request: SandboxRequest) -> tuple[str, ...] | None:
    """The runner dirs ``request`` mounts (:data:`JOB_DIRS` or :data:`LANE_DIRS`), or None
    when it mounts anything else, or writable anything but the lane dir."""
    targets = sorted(m.target for m in request.mounts)
    for dirs in (JOB_DIRS, LANE_DIRS):
        if targets == [f"{JOB_ROOT}/{d}" for d in dirs] and all(
                m.readonly == (m.target != f"{JOB_ROOT}/{CHANNEL_DIR}") for m in request.mounts):
            return dirs
    return None


def _read_exactly(fd: int, n: int, timeout: float | None = None) -> bytes:
    """Up to ``n`` bytes, fewer on EOF or once ``timeout`` has passed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    data = b""
    while len(data) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                break
        if not (chunk := os.read(fd, n - len(data))):
            break
        data += chunk
    return data


class Restoring:
    """A sandbox being restored from a checkpoint of a warm runner, its quota lifted.

    :meth:`settle` is the gate before "go": it puts the job's CPU quota back, reads it
    back, and says whether it is in force.
    """

    def __init__(self, session: GVisorSession, limits: Limits) -> None:
        self.session = session
        self.quota = int(oci.resources(limits)["cpu"]["quota"])
        self._file = _CPU_CGROUP / session.container_id / "cpu.cfs_quota_us"
        self.lifted = False

    def lift(self) -> None:
        """Once runsc has set the job's quota on the new cgroup, lift it for the restore.

        Waiting for runsc's own write first means it cannot overwrite ours; where the
        quota never shows (no cgroup-v1 cpu controller) nothing is lifted.
        """
        deadline = time.monotonic() + _QUOTA_WAIT_S
        while self.session.alive and time.monotonic() < deadline:
            try:
                if int(self._file.read_text()) == self.quota:
                    self._file.write_text("-1")
                    self.lifted = True
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.002)

    def settle(self) -> bool:
        """Give the sandbox the job's CPU quota again; True when it is in force."""
        if not self.lifted:
            return True
        try:
            self._file.write_text(str(self.quota))
            return int(self._file.read_text()) == self.quota
        except (OSError, ValueError):
            return False


class SnapshotStore:
    """Checkpoint images of a warm runner sandbox under ``root``, one per baked limits.

    It drives ``backend`` (boot, checkpoint, restore); the backend knows it only as its
    :class:`~pitwall_executor.sandbox.gvisor.Restorer`, set by :meth:`attach`.
    """

    #: Restore live sessions too (:meth:`start`); False boots them (bench/latency.py).
    sessions = True

    @classmethod
    def attach(cls, backend: GVisorBackend) -> Self:
        """A store under ``backend``'s state dir that serves the backend's cold runner jobs."""
        store = cls(backend, backend.state_dir / "snapshots")
        backend.snapshots = store
        return store

    def __init__(self, backend: GVisorBackend, root: Path) -> None:
        self._backend = backend
        self._root = root
        root.mkdir(parents=True, exist_ok=True)
        orphans.reap_builds(root)
        self._lock = threading.Lock()
        self._failures = 0
        self._count = threading.Lock()
        #: Runs served by a restore / plain cold because no image was usable (tests, bench).
        self.restored = 0
        self.fallbacks = 0

    @property
    def enabled(self) -> bool:
        return self._failures < _MAX_FAILURES

    def fits(self, request: SandboxRequest) -> bool:
        """A runner request over ``/job/bundle`` and ``/job/input`` (and a live session's
        lane dir) with no extra env."""
        return (request.argv == RUNNER_ARGV and not request.env and request.cwd == SCRATCH
                and job_dirs(request) is not None)

    def key(self, limits: Limits, dirs: tuple[str, ...] = JOB_DIRS) -> str:
        """The image's name: baked limits, then a digest of what the sandbox holds (the
        root file system's digest: a new sandbox image never restores an old checkpoint)
        and of what restores it (runsc, its flags); :data:`LANE_PREFIX` first for the
        images with the lane dir."""
        backend = self._backend
        parts = [backend.image, backend.runsc_version, *backend.flags,
                 *backend.checkpoint_flags, *WARM_ARGV]
        digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
        baked = "-".join(f"{getattr(limits, k)}" for k in BAKED_LIMITS)
        return f"{LANE_PREFIX if dirs == LANE_DIRS else ''}{baked}-{digest}"

    def image(self, limits: Limits, *, build: bool = True,
              dirs: tuple[str, ...] = JOB_DIRS) -> Path | None:
        """The image dir for ``limits``, built now if missing and ``build``; None when
        unavailable (disabled, or another thread of this process is building it)."""
        if not self.enabled:
            return None
        key = self.key(limits, dirs)
        path = self._root / key
        if (path / "checkpoint.img").is_file():
            return path
        if not build or not self._lock.acquire(blocking=False):
            return None
        try:
            if not (path / "checkpoint.img").is_file():
                self._build(limits, path, dirs)
        except Exception:  # the runtime failed: log it, count it, run cold
            log.exception("sandbox snapshot: building the checkpoint image failed")
            self._failures += 1
            return None
        finally:
            self._lock.release()
        self._drop_stale(key)
        return path

    def restore(self, request: SandboxRequest, image: Path, *, arm: bool) -> Restoring:
        """Start restoring ``image`` with ``request``'s bundle (its argv: :data:`WARM_ARGV`),
        the quota lifted and "ping" already sent: "ready" on stdout means it is up."""
        restoring = Restoring(self._backend.launch(request, arm=arm, restore_from=image),
                              request.limits)
        with contextlib.suppress(OSError):  # the pipe holds it until the process is back
            restoring.session.stdin.write(PING_LINE)
            restoring.session.stdin.flush()
        restoring.lift()
        return restoring

    def failed(self, image: Path, session: GVisorSession, why: str) -> None:
        """A restore of ``image`` never got ready: log it, drop the image, count it."""
        session.kill()
        outcome = session.wait()
        log.warning("sandbox snapshot: restoring %s failed (%s; exit %s): %s", image.name, why,
                    outcome.exit_code, (outcome.backend_log or outcome.stderr.decode(
                        "utf-8", "replace"))[-300:])
        shutil.rmtree(image, ignore_errors=True)
        with self._count:
            self._failures += 1

    def run(self, request: SandboxRequest) -> SandboxOutcome | None:
        """Run a fitting request in a restored sandbox; None: run it plain cold."""
        session = self._restored(request)
        if session is None:
            return None
        with affinity.one_cpu_run(session, request.limits.cpus):
            self._go(session)
            return session.collect(request)

    def start(self, request: SandboxRequest) -> GVisorSession | None:
        """A live session (event mode, the prefix channel) of a fitting request in a
        restored sandbox, already told "go"; None: start it plain cold. The runner keeps
        its stdin for such sessions and reads it only line by line before "go", so the
        frames written next are the session's (``pitwall.sandbox.runner``)."""
        session = self._restored(request) if self.sessions else None
        if session is not None:
            self._go(session)
        return session

    def _restored(self, request: SandboxRequest) -> GVisorSession | None:
        """A sandbox restored for ``request``, ready and under the job's CPU quota, before
        "go"; None (counted as a fallback) when the request does not fit or it failed."""
        dirs = job_dirs(request)
        if dirs is None or not self.fits(request):
            return None
        image = self.image(request.limits, dirs=dirs)
        if image is None:
            with self._count:
                self.fallbacks += 1
            return None
        # The job's own dirs, in the order the image was made with (mounts pair by target).
        by_target = {m.target: m for m in request.mounts}
        mounts = tuple(by_target[f"{JOB_ROOT}/{d}"] for d in dirs)
        restoring = self.restore(dataclasses.replace(request, argv=WARM_ARGV, mounts=mounts),
                                 image, arm=True)
        session = restoring.session
        answer = _read_exactly(session.stdout.fileno(), len(READY_LINE), RESTORE_TIMEOUT_S)
        # Nothing of the job has run before "go": a failure here is the runtime's alone.
        if answer != READY_LINE or not restoring.settle():
            why = "no answer" if answer != READY_LINE else "the job's CPU quota not restored"
            self.failed(image, session, why)
            with self._count:
                self.fallbacks += 1
            return None
        with self._count:
            self.restored += 1
        return session

    @staticmethod
    def _go(session: GVisorSession) -> None:
        with contextlib.suppress(OSError):  # died meanwhile: its outcome says how
            session.stdin.write(GO_LINE)
            session.stdin.flush()

    def _build(self, limits: Limits, dest: Path, dirs: tuple[str, ...] = JOB_DIRS) -> None:
        """Start a warm runner with empty mounts, wait for "ready", checkpoint it."""
        work = self._root / f"{orphans.BUILD_PREFIX}{owner.current().token}-{uuid.uuid4().hex[:8]}"
        try:
            mounts = empty_job_mounts(work, dirs)
            clock = limits.model_copy(update={"timeout_s": _BUILD_TIMEOUT_S})
            request = SandboxRequest(f"snapshot-{work.name[7:]}", WARM_ARGV, mounts, {}, clock)
            with self._backend.launch(request, arm=True) as session:
                line = _read_exactly(session.stdout.fileno(), len(READY_LINE))
                if line != READY_LINE:
                    session.kill()
                    raise SandboxError(f"the warm runner did not get ready ({line!r}): "
                                       f"{session.wait().reason}")
                (work / "image").mkdir()
                self._backend.checkpoint(session.container_id, work / "image")
            if not (work / "image" / "checkpoint.img").is_file():
                raise SandboxError("runsc checkpoint wrote no checkpoint.img")
            try:
                os.rename(work / "image", dest)
            except OSError:
                if not (dest / "checkpoint.img").is_file():  # not a concurrent worker's
                    raise
            size = (dest / "checkpoint.img").stat().st_size
            log.info("sandbox snapshot: built %s (%.1f MB)", dest.name, size / 1e6)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _drop_stale(self, key: str) -> None:
        """Remove the images of the same limits made for an older runtime."""
        baked = key.rsplit("-", 1)[0]
        for old in self._root.glob(f"{baked}-*"):
            if old.name != key:
                shutil.rmtree(old, ignore_errors=True)

