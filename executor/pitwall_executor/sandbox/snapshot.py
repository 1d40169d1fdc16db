"""Cold runner jobs restored from a checkpoint of a warm sandbox (gVisor save/restore).

A cold gVisor job pays the sandbox's boot and ~11,000 trapped system calls of the
runner's imports (docs/benchmarks.md). Here that is paid once: a sandbox is started as
a warm-pool slot would be (``python -m pitwall.runner --warm /job``: libraries
imported, "ready" said, blocked on stdin, its ``/job`` mounts empty directories that
are deleted afterwards), then saved with ``runsc checkpoint``, which ends it. Each cold
runner job is then a *new* sandbox, ``runsc restore`` of that image under a new
container id with the job's own bundle: the job's directories are mounted at
``/job/bundle`` and ``/job/input`` exactly as in a plain cold run (a restored sandbox
takes its mounts, cgroups and limits from the new bundle; its memory from the image),
and the job starts when the worker writes "go". Nothing ran in it before but the
runner's imports, and the image holds no job data: the same isolation as a cold start.

Measured (ptrace platform, runsc 20221219): restore to the first strategy line ~0.42 s
against ~1.07 s cold; most of it is runsc loading the image's memory (~0.25 s; the
image is ~9 MB, already compressed by runsc, and this release has no flag to tune it).

The image is built lazily by the first fitting request (which pays ~1.5 s once) and
stored under the backend's state dir, keyed like the bytecode tree (``pycache.py``):
the runtime's digest (rootfs, interpreter, venv, SDK, runsc), the mtimes of the SDK
and venv (an edit mid-process rebuilds), the flags and the limits baked into a running
sandbox (memory, pids, CPUs, scratch size). A restore that fails is logged, the image
dropped (rebuilt by the next request) and the job run plain cold; after
:data:`_MAX_FAILURES` failures the store turns itself off for this process.

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
import shutil
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from pitwall.errors import SandboxError
from pitwall.models import Limits
from pitwall.runner import GO_LINE, READY_LINE, WARM_FLAG
from pitwall_executor.sandbox import owner
from pitwall_executor.sandbox.base import (
    JOB_ROOT,
    PYTHON,
    SCRATCH,
    Mount,
    SandboxOutcome,
    SandboxRequest,
)

if TYPE_CHECKING:
    from pitwall_executor.sandbox.gvisor import GVisorBackend

log = logging.getLogger(__name__)

RUNNER_ARGV = (PYTHON, "-S", "-m", "pitwall.runner", JOB_ROOT)
WARM_ARGV = (PYTHON, "-S", "-m", "pitwall.runner", WARM_FLAG, JOB_ROOT)
_DIRS = ("bundle", "input")
_BAKED = ("memory_mb", "pids", "cpus", "scratch_mb")  # fixed inside a running sandbox
_BUILD_TIMEOUT_S = 120.0
_MAX_FAILURES = 2
#: How ``runsc restore`` reports, in its own log, a restore that did not happen. The log
#: is runsc's, on the host: a job cannot write it (its stderr, which holds the same
#: message, it could fake to have itself run twice and the image dropped).
_RESTORE_ERROR = "restoring container"


def _read_exactly(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n and (chunk := os.read(fd, n - len(data))):
        data += chunk
    return data


class SnapshotStore:
    """Checkpoint images of a warm runner sandbox under ``root``, one per baked limits."""

    def __init__(self, backend: GVisorBackend, root: Path) -> None:
        self._backend = backend
        self._root = root
        root.mkdir(parents=True, exist_ok=True)
        self._remove_dead_builds()
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
        """A runner request over ``/job/bundle`` and ``/job/input`` with no extra env."""
        targets = sorted(m.target for m in request.mounts)
        return (request.argv == RUNNER_ARGV and not request.env and request.cwd == SCRATCH
                and targets == [f"{JOB_ROOT}/{d}" for d in _DIRS]
                and all(m.readonly for m in request.mounts))

    def key(self, limits: Limits) -> str:
        """The image's name: baked limits, then a digest of what the sandbox holds."""
        backend = self._backend
        layout = backend.layout
        stamps = [p.stat().st_mtime_ns for p in sorted((layout.sdk / "pitwall").rglob("*.py"))]
        stamps.append(layout.site_packages.stat().st_mtime_ns)
        parts = [backend.image, *backend.flags, *map(str, stamps), *WARM_ARGV]
        digest = hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
        baked = "-".join(f"{getattr(limits, k)}" for k in _BAKED)
        return f"{baked}-{digest}"

    def image(self, limits: Limits, *, build: bool = True) -> Path | None:
        """The image dir for ``limits``, built now if missing and ``build``; None when
        unavailable (disabled, or another thread of this process is building it)."""
        if not self.enabled:
            return None
        key = self.key(limits)
        path = self._root / key
        if (path / "checkpoint.img").is_file():
            return path
        if not build or not self._lock.acquire(blocking=False):
            return None
        try:
            if not (path / "checkpoint.img").is_file():
                self._build(limits, path)
        except Exception:  # the runtime failed: log it, count it, run cold
            log.exception("sandbox snapshot: building the checkpoint image failed")
            self._failures += 1
            return None
        finally:
            self._lock.release()
        self._drop_stale(key)
        return path

    def run(self, request: SandboxRequest) -> SandboxOutcome | None:
        """Run a fitting request in a restored sandbox; None: run it plain cold."""
        if not self.fits(request):
            return None
        image = self.image(request.limits)
        if image is None:
            with self._count:
                self.fallbacks += 1
            return None
        # The job's own dirs, in the order the image was made with (mounts pair by target).
        by_target = {m.target: m for m in request.mounts}
        mounts = tuple(by_target[f"{JOB_ROOT}/{d}"] for d in _DIRS)
        restore = dataclasses.replace(request, argv=WARM_ARGV, mounts=mounts)
        session = self._backend.launch(restore, arm=True, restore_from=image)
        with contextlib.suppress(OSError):  # the pipe holds it until the process is back
            session.stdin.write(GO_LINE)
            session.stdin.flush()
        outcome = session.collect(request)
        if self._restore_failed(outcome):
            log.warning("sandbox snapshot: restoring %s failed (exit %s): %s; running the "
                        "job cold", image.name, outcome.exit_code,
                        outcome.stderr[:300].decode("utf-8", "replace"))
            shutil.rmtree(image, ignore_errors=True)
            with self._count:
                self._failures += 1
                self.fallbacks += 1
            return None
        with self._count:
            self.restored += 1
        return outcome

    @staticmethod
    def _restore_failed(outcome: SandboxOutcome) -> bool:
        return (not outcome.stdout and outcome.exit_code not in (0, None)
                and not (outcome.timed_out or outcome.cancelled or outcome.oom)
                and _RESTORE_ERROR in outcome.backend_log)

    def _build(self, limits: Limits, dest: Path) -> None:
        """Start a warm runner with empty mounts, wait for "ready", checkpoint it."""
        work = self._root / f".build-{owner.current().token}-{uuid.uuid4().hex[:8]}"
        try:
            for name in _DIRS:
                (work / name).mkdir(parents=True)
                (work / name).chmod(0o755)
            work.chmod(0o755)
            mounts = tuple(Mount(work / d, f"{JOB_ROOT}/{d}") for d in _DIRS)
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

    def _remove_dead_builds(self) -> None:
        for d in self._root.glob(".build-*"):
            who = owner.Owner.parse("-".join(d.name.split("-")[1:3]))
            if who is None or not who.alive():
                shutil.rmtree(d, ignore_errors=True)
