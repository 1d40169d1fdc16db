"""``GVisorBackend``: runs a job with ``runsc`` directly from an OCI bundle, no daemon.

Per job: a unique container id (never reused), a state dir holding ``config.json``, a
memory cgroup we create ourselves (so the OOM count can be read after the run), and one
``runsc run`` process whose stdout/stderr are the container's, drained concurrently with
caps. The wall-clock timeout and ``kill`` are enforced from outside with
``runsc kill <id> KILL`` (the sandbox exits almost at once), escalating to
``runsc delete --force`` and SIGKILL of the process group. ``finally`` always deletes
the container, the cgroup and the job dir. Each sandbox also has a supervisor process
(:mod:`.supervisor`) that destroys it if the worker dies, or if the worker has not ended
it shortly after its wall clock (a stopped worker).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol, cast

from pitwall.errors import SandboxError
from pitwall_executor.sandbox import affinity, oci, orphans, owner
from pitwall_executor.sandbox.base import SandboxOutcome, SandboxRequest, SessionEnd
from pitwall_executor.sandbox.capture import HeadTailBuffer, StreamReader
from pitwall_executor.sandbox.rootfs import Rootfs, RootfsStore
from pitwall_executor.sandbox.supervisor import GRACE_S as SUPERVISOR_GRACE_S
from pitwall_executor.sandbox.supervisor import Supervisor

log = logging.getLogger(__name__)
RUNSC = "/usr/bin/runsc"
_MEMCG_ROOT = Path("/sys/fs/cgroup/memory")
_POLL_S = 0.02
_GRACE_S = 1.0


@dataclass
class _Run:
    container_id: str
    proc: subprocess.Popen[bytes]
    guard: Supervisor
    cancelled: threading.Event = field(default_factory=threading.Event)


class _MemoryCgroup:
    """A cgroup-v1 memory group made before runsc starts: runsc then joins it without
    owning it, so ``memory.oom_control`` survives the container and tells us about OOM."""

    def __init__(self, name: str, limit_bytes: int) -> None:
        self.path: Path | None = None
        if not (_MEMCG_ROOT / "memory.limit_in_bytes").exists():
            return  # cgroup v2 or no memory controller: runsc sets the limit, OOM unknown
        path = _MEMCG_ROOT / name
        path.mkdir()
        (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        self.path = path

    def oom_killed(self) -> bool | None:
        if self.path is None:
            return None
        try:
            text = (self.path / "memory.oom_control").read_text()
        except OSError:  # removed by the supervisor (the worker was stopped past the clock)
            return None
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value) > 0
        return None

    def remove(self) -> None:
        if self.path is not None:
            self.remove_path(self.path)

    @staticmethod
    def remove_path(path: Path) -> None:
        for _ in range(50):  # the sandbox's last tasks may take a moment to leave
            try:
                path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


class Restorer(Protocol):
    """Serves a cold job from a saved sandbox instead of a boot (``checkpoint.SnapshotStore``)."""

    def run(self, request: SandboxRequest) -> SandboxOutcome | None:
        """The job's outcome, or None when it is not served: the backend then boots it."""
        ...

    def start(self, request: SandboxRequest) -> GVisorSession | None:
        """A live session already running the job, or None: the backend then boots it."""
        ...


class GVisorBackend:
    """Runs each request in a fresh gVisor sandbox (``runsc``, no network) on runsc's
    default platform: systrap with the backported runsc the setup installs on Debian 12
    (``scripts/lib.sh``), ptrace with the distribution's own older runsc.

    Every sandbox's root is the sandbox image (:mod:`.rootfs`, read-only), found or
    built in ``images`` (by default the user's store) at construction; :attr:`image`
    is its digest. ``state_dir`` holds runsc's ``--root`` and per-job bundles; give
    each worker its own, or share one: a backend starting up destroys the sandboxes
    left in it by dead workers (:meth:`destroy_orphans`), never a live worker's.
    :attr:`snapshots`, when the composition sets it (``SnapshotStore.attach``, done by
    ``sandbox.make_backend``), restores cold runner jobs from a checkpoint of a warm
    runner (:mod:`.checkpoint`) instead of booting and importing from scratch; this
    module only provides the runsc primitives that needs (:meth:`launch` with
    ``restore_from``, :meth:`checkpoint`).
    """

    name = "gvisor"
    #: Live sessions may map a shared-memory lane (``pitwall.lane``): gVisor maps a bind
    #: mounted host file's pages into the sandbox, so both sides see the same memory.
    lanes = True

    def __init__(self, state_dir: Path, *, runsc: str = RUNSC,
                 layout: oci.PythonLayout | None = None, images: Path | None = None,
                 extra_flags: tuple[str, ...] = ()) -> None:
        if shutil.which(runsc) is None:
            raise SandboxError(f"runsc (gVisor) is not installed at {runsc}; install gVisor "
                               "or choose another sandbox backend")
        self._runsc = runsc
        self._state = state_dir.resolve()
        self._runsc_root = self._state / "runsc"
        self._jobs = self._state / "jobs"
        for d in (self._runsc_root, self._jobs):
            d.mkdir(parents=True, exist_ok=True)
        # The sandbox image, built from ``layout`` (this interpreter, its venv and the SDK)
        # on first use: the read-only root of every sandbox (sandbox/rootfs.py).
        self._rootfs = RootfsStore(images).ensure(
            layout or oci.PythonLayout.of_this_interpreter())
        # Mounts cached like the root (fscache, not remote_revalidating): nothing on the host
        # changes them during a job, and imports cost fewer gofer round trips, hence less
        # start-up CPU (docs/benchmarks.md, "Where the rest goes"). Files the warm pool
        # adds before "go" are still found: an uncached name is looked up anew.
        self._flags = ("--network=none", "--cpu-num-from-quota",
                       "--file-access-mounts=exclusive", *extra_flags)
        self._runs: dict[str, _Run] = {}
        self._retiring: set[threading.Thread] = set()
        self._lock = threading.Lock()
        atexit.register(self.drain)
        self.destroy_orphans()
        #: Tried first for every :meth:`run`; None: every job boots.
        self.snapshots: Restorer | None = None

    def destroy_orphans(self) -> list[str]:
        """Destroy this state dir's sandboxes whose worker process has died; their ids.

        Their supervisors normally did it within seconds of the death; this catches the
        sandboxes whose supervisor died too (:func:`orphans.reap_runsc`). Each container
        id names its owner (:mod:`owner`); a live owner's are never touched.
        """
        return list(orphans.reap_runsc(self._state, self._runsc).sandboxes)

    @property
    def image(self) -> str:
        """The run manifest's "image": the digest of the sandbox's root file system."""
        return self._rootfs.digest

    @property
    def rootfs(self) -> Rootfs:
        """The sandbox image every sandbox of this backend runs on."""
        return self._rootfs

    @property
    def state_dir(self) -> Path:
        return self._state

    @property
    def runsc_root(self) -> Path:
        return self._runsc_root

    @property
    def flags(self) -> tuple[str, ...]:
        """The runsc flags every sandbox of this backend starts (and restores) with."""
        return self._flags

    @functools.cached_property
    def runsc_version(self) -> str:
        """``runsc --version``: a checkpoint restores only with the runsc that took it."""
        return subprocess.run([self._runsc, "--version"], capture_output=True, text=True,
                              check=False).stdout.strip()

    @functools.cached_property
    def checkpoint_flags(self) -> tuple[str, ...]:
        """Uncompressed images without zero pages, where this runsc can write them.

        A restore spends most of its time loading the image; runsc compresses it by
        default (flate), and decompressing is most of that: an uncompressed image restores
        markedly faster, for an image the size of the runner's resident memory instead
        of a fraction of it (docs/benchmarks.md, "Systrap, uncompressed images")."""
        help_text = subprocess.run(self._runsc_cmd("checkpoint", "--help"),
                                   capture_output=True, text=True, check=False)
        text = help_text.stdout + help_text.stderr
        flags = []
        if "-compression" in text:
            flags.append("--compression=none")
        if "-exclude-committed-zero-pages" in text:
            flags.append("--exclude-committed-zero-pages")
        return tuple(flags)

    def checkpoint(self, container_id: str, image_dir: Path) -> None:
        """Save a running sandbox into ``image_dir`` (``runsc checkpoint``); it then exits."""
        res = subprocess.run(
            self._runsc_cmd(*self._flags, "checkpoint", *self.checkpoint_flags,
                            "--image-path", str(image_dir),
                            container_id),
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
        if res.returncode != 0:
            raise SandboxError(f"runsc checkpoint of {container_id} failed: "
                               f"{(res.stderr or res.stdout).strip()[:500]}")

    def _runsc_cmd(self, *args: str) -> list[str]:
        return [self._runsc, "--root", str(self._runsc_root), *args]

    def _write_bundle(self, request: SandboxRequest, cid: str) -> Path:
        bundle = self._jobs / cid
        bundle.mkdir()
        limits = request.limits
        self._rootfs.touch()  # in use: a build's garbage collection keeps it
        cfg = oci.config(
            rootfs=self._rootfs.path,
            argv=oci.interpreter_argv(request.argv),
            env=oci.environment(request.env),
            cwd=request.cwd,
            mount_list=oci.mounts(request.mounts, limits),
            limits=limits,
            cgroup=f"/{cid}",
        )
        (bundle / "config.json").write_text(json.dumps(cfg, indent=1))
        return bundle

    def start(self, request: SandboxRequest) -> GVisorSession:
        """Start a sandbox with live pipes (event mode); see :class:`GVisorSession`.

        Same policy, limits and cleanup as :meth:`run`; the wall clock
        (``request.limits.timeout_s``) starts now and is enforced by a watchdog thread.
        A runner session is restored from the checkpoint when :attr:`snapshots` serves
        it, as a cold one-shot run is (the lookahead audit's and event jobs' sandboxes).
        """
        if self.snapshots is not None:
            session = self.snapshots.start(request)
            if session is not None:
                return session
        return self.launch(request, arm=True)

    def launch(self, request: SandboxRequest, *, arm: bool,
               restore_from: Path | None = None) -> GVisorSession:
        """Start a session; ``arm=False`` leaves the wall clock off until
        :meth:`GVisorSession.arm` (the warm pool: the clock starts at the job's "go").
        ``restore_from``: a checkpoint image dir (:mod:`.checkpoint`); the new sandbox is
        restored from it with this request's bundle (mounts, limits, cgroups) and id."""
        # runsc's control socket name holds the id: keep it well under 108 bytes.
        slug = re.sub(r"[^A-Za-z0-9_.-]", "-", request.job_id)[:32]
        cid = f"{orphans.CID_PREFIX}{owner.current().token}-{slug}-{uuid.uuid4().hex[:12]}"
        started = time.monotonic()
        deadline = started + request.limits.timeout_s if arm else math.inf
        # Before anything of the sandbox exists: the worker may die at any point after.
        guard = Supervisor.for_runsc(self._runsc, self._runsc_root, cid, self._jobs / cid,
                                     deadline=deadline)
        cgroup: _MemoryCgroup | None = None
        bundle = self._jobs / cid
        try:
            bundle = self._write_bundle(request, cid)
            cgroup = _MemoryCgroup(cid, request.limits.memory_mb * 1024 * 1024)
            proc = subprocess.Popen(
                self._runsc_cmd(*self._flags, "--log", str(bundle / "runsc.log"),
                                *_start_args(bundle, cid, restore_from)),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True, env={"PATH": "/usr/bin:/bin"},
            )
        except BaseException:
            if cgroup is not None:
                cgroup.remove()
            shutil.rmtree(bundle, ignore_errors=True)
            guard.release()
            raise
        run = _Run(cid, proc, guard)
        with self._lock:
            self._runs[request.job_id] = run
        return GVisorSession(self, request, run, bundle, cgroup, started, deadline)

    def run(self, request: SandboxRequest) -> SandboxOutcome:
        if self.snapshots is not None:
            outcome = self.snapshots.run(request)
            if outcome is not None:
                return outcome
        session = self.launch(request, arm=True)
        with affinity.one_cpu_run(session, request.limits.cpus):
            return session.collect(request)

    def _retire(self, run: _Run, cgroup: _MemoryCgroup | None, bundle: Path) -> None:
        """Delete an ended container's runsc state, cgroups and bundle dir in the
        background. Its processes are dead, but ``runsc delete`` waits until they are
        reaped, and a restored sandbox's gofer and Sentry are orphans of ``runsc restore``
        whose reaping is up to PID 1, which may take longer than the job itself
        (docs/benchmarks.md, "Restored cold start"); the job would not end meanwhile.
        Nothing reads these after the outcome; a worker that dies meanwhile leaves them
        to the sandbox's supervisor, released only once they are gone."""
        cid = run.container_id

        def work() -> None:
            try:
                self._delete(cid)
                if cgroup is not None:
                    cgroup.remove()
                shutil.rmtree(bundle, ignore_errors=True)
                run.guard.release()
            finally:
                with self._lock:
                    self._retiring.discard(thread)

        thread = threading.Thread(target=work, name=f"retire-{cid[-12:]}", daemon=True)
        with self._lock:
            self._retiring.add(thread)
        thread.start()

    def drain(self, timeout: float = 10.0) -> None:
        """Wait for the background clean-ups of ended sandboxes (:meth:`_retire`)."""
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = list(self._retiring)
            if not threads or time.monotonic() >= end:
                return
            threads[0].join(max(0.0, end - time.monotonic()))

    def _forget(self, job_id: str, run: _Run) -> None:
        with self._lock:
            if self._runs.get(job_id) is run:
                del self._runs[job_id]

    def _stop(self, run: _Run) -> None:
        """Kill the container; escalate until the runsc process is gone (≤ ~1 s)."""
        if run.proc.poll() is not None:
            return
        # A container still being created refuses `runsc kill`: retry until it takes.
        deadline = time.monotonic() + _GRACE_S / 2
        while time.monotonic() < deadline:
            self._quiet(self._runsc_cmd("kill", run.container_id, "KILL"))
            try:
                run.proc.wait(timeout=0.1)
                return
            except subprocess.TimeoutExpired:
                pass
        self._delete(run.container_id)
        try:
            run.proc.wait(timeout=_GRACE_S / 2)
        except subprocess.TimeoutExpired:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()

    def _reap(self, cid: str) -> None:
        """SIGKILL every process of this backend's container ``cid`` that is still alive."""
        marker = str(self._runsc_root).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if marker in cmd and cid.encode() in cmd:
                with contextlib.suppress(OSError):
                    os.kill(int(proc.name), signal.SIGKILL)
        self._delete(cid)

    def _delete(self, cid: str) -> None:
        if any(self._runsc_root.glob(f"*{cid}*")):
            self._quiet(self._runsc_cmd("delete", "--force", cid))

    def _quiet(self, cmd: list[str]) -> None:
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=10, check=False)

    def kill(self, job_id: str) -> None:
        """Cancel a running job (from any thread); the run ends within about a second."""
        with self._lock:
            run = self._runs.get(job_id)
        if run is None:
            return
        run.cancelled.set()
        if run.proc.poll() is None:
            self._quiet(self._runsc_cmd("kill", run.container_id, "KILL"))


def _start_args(bundle: Path, cid: str, restore_from: Path | None) -> tuple[str, ...]:
    if restore_from is None:
        return ("run", "--bundle", str(bundle), cid)
    return ("restore", "--image-path", str(restore_from), "--bundle", str(bundle), cid)


def _tail(path: Path, limit: int = 4096) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")


class GVisorSession(SessionEnd):
    """A started gVisor sandbox with live pipes (``SandboxSession``, docs/architecture.md §5).

    ``stdin``/``stdout`` are the sandboxed process's own fds 0 and 1 (binary, unbuffered
    pipes): write to ``stdin`` and close it to send EOF; read ``stdout`` until EOF. stderr
    is drained on a thread into the request's ``log_kb`` head+tail cap. A watchdog thread
    enforces the wall clock from outside, whatever the caller is blocked on: at the
    deadline, or on :meth:`kill` (any thread), it kills the sandbox (``runsc kill``, then
    ``delete --force``, then SIGKILL; gone within ~1 s), so a blocked ``stdout.read``
    returns EOF and a ``stdin.write`` raises ``BrokenPipeError``. When the process has
    ended the watchdog removes the container, its cgroup and its bundle dir.
    :meth:`wait` returns the same :class:`SandboxOutcome` as ``run`` with ``stdout`` empty
    (the caller consumed it) and closes ``stdin``; ``stdout`` stays the caller's (use the
    session as a context manager to kill, wait and close both).
    """

    def __init__(self, backend: GVisorBackend, request: SandboxRequest, run: _Run,
                 bundle: Path, cgroup: _MemoryCgroup | None, started: float,
                 deadline: float) -> None:
        proc = run.proc
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.stdin = cast(BinaryIO, proc.stdin)
        self.stdout = cast(BinaryIO, proc.stdout)
        self.started = started
        self.container_id = run.container_id
        self._what = f"sandbox {run.container_id}"
        self._backend, self._request, self._run = backend, request, run
        self._bundle, self._cgroup = bundle, cgroup
        self._deadline = deadline  # math.inf: not armed yet (a warm-pool slot)
        self._wake = threading.Event()
        self._err = HeadTailBuffer(request.limits.log_kb * 1024)
        self._err_reader = StreamReader(proc.stderr, self._err)
        self._err_reader.start()
        self._outcome: SandboxOutcome | None = None
        self._done = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                          name=f"sandbox-watchdog-{run.container_id}")
        self._watchdog.start()

    @property
    def first_stderr_at(self) -> float | None:
        return self._err_reader.first_byte_at

    @property
    def alive(self) -> bool:
        return self._run.proc.poll() is None and not self._run.cancelled.is_set()

    def pin_cpu(self, cpu: int) -> bool:
        """Restrict every thread of the sandbox to ``cpu`` (:mod:`.affinity`); runsc
        creates the cgroup as the sandbox boots, so wait for it (at most 2 s)."""
        end = time.monotonic() + 2.0
        while not affinity.cgroup_exists(self.container_id):
            if not self.alive or time.monotonic() > end:
                return False
            time.sleep(0.005)
        return affinity.pin_cgroup(self.container_id, cpu)

    def arm(self, timeout_s: float) -> None:
        """Start (or restart) the wall clock: the sandbox is killed ``timeout_s`` from now."""
        self._deadline = time.monotonic() + timeout_s
        self._run.guard.arm(self._deadline)
        self._wake.set()

    def kill(self) -> None:
        """Stop the sandbox (from any thread); :meth:`wait` then reports ``cancelled``."""
        self._run.cancelled.set()
        self._wake.set()

    def _watch(self) -> None:
        run, timed_out = self._run, False
        exit_code: int | None = None
        try:
            while run.proc.poll() is None:
                if run.cancelled.is_set():
                    break
                if time.monotonic() >= self._deadline:
                    timed_out = True
                    break
                if self._cgroup is not None and self._cgroup.oom_killed():
                    # The kernel killed a task of the sandbox at its memory limit. The
                    # sandbox usually dies with it, but not always: restored from an
                    # uncompressed image, the Sentry survived and hung until the wall
                    # clock (tests/security: memory bomb). End it now, as an OOM.
                    break
                self._wake.wait(min(_POLL_S * 5, max(0.0, self._deadline - time.monotonic())))
                self._wake.clear()
            self._backend._stop(run)
            run.guard.arm(math.inf)  # ended: only the worker's death matters to it now
            exit_code = run.proc.returncode
            # Found ended past the supervisor's deadline: this thread did not run (the
            # worker was stopped) and the supervisor ended it for the wall clock.
            timed_out = timed_out or time.monotonic() >= self._deadline + SUPERVISOR_GRACE_S
        finally:
            self._outcome = self._cleanup(exit_code, timed_out)
            self._done.set()

    def _cleanup(self, exit_code: int | None, timed_out: bool) -> SandboxOutcome:
        run, backend = self._run, self._backend
        backend._forget(self._request.job_id, run)
        self._err_reader.join(timeout=0.05)
        if self._err_reader.is_alive():
            # Something still holds the pipes: a sandbox killed while still being created
            # can outlive `runsc run`. Delete it now, then end what is left of it (found by
            # our root and its container id).
            backend._delete(run.container_id)
            self._err_reader.join(timeout=1)
            if self._err_reader.is_alive():
                backend._reap(run.container_id)
                self._err_reader.join(timeout=5)
        oom = self._cgroup.oom_killed() if self._cgroup is not None else None
        log = _tail(self._bundle / "runsc.log")
        backend._retire(run, self._cgroup, self._bundle)
        return self.ended(exit_code=exit_code, timed_out=timed_out,
                          cancelled=run.cancelled.is_set(), oom=oom,
                          backend_log=log if exit_code != 0 else "")
