"""``GVisorBackend``: runs a job with ``runsc`` directly from an OCI bundle, no daemon.

Per job: a unique container id (never reused), a state dir holding ``config.json``, a
memory cgroup we create ourselves (so the OOM count can be read after the run), and one
``runsc run`` process whose stdout/stderr are the container's, drained concurrently with
caps. The wall-clock timeout and ``kill`` are enforced from outside with
``runsc kill <id> KILL`` (the sandbox exits within ~50 ms), escalating to
``runsc delete --force`` and SIGKILL of the process group. ``finally`` always deletes
the container, the cgroup and the job dir.
"""

from __future__ import annotations

import contextlib
import json
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

from pitwall.errors import SandboxError
from pitwall_executor.sandbox import oci
from pitwall_executor.sandbox.base import SandboxOutcome, SandboxRequest
from pitwall_executor.sandbox.capture import HeadBuffer, HeadTailBuffer, StreamReader

RUNSC = "/usr/bin/runsc"
_MEMCG_ROOT = Path("/sys/fs/cgroup/memory")
_POLL_S = 0.02
_GRACE_S = 1.0


@dataclass
class _Run:
    container_id: str
    proc: subprocess.Popen[bytes]
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
        for line in (self.path / "memory.oom_control").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value) > 0
        return None

    def remove(self) -> None:
        if self.path is None:
            return
        for _ in range(50):  # the sandbox's last tasks may take a moment to leave
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.02)


class GVisorBackend:
    """Runs each request in a fresh gVisor sandbox (``runsc``, ptrace platform, no network).

    ``state_dir`` holds the rootfs skeleton, runsc's ``--root`` and per-job bundles; give
    each worker its own.
    """

    name = "gvisor"

    def __init__(self, state_dir: Path, *, runsc: str = RUNSC,
                 layout: oci.PythonLayout | None = None,
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
        self._rootfs = oci.ensure_rootfs(self._state / "rootfs")
        self._empty = self._state / "empty"
        self._layout = layout or oci.PythonLayout.of_this_interpreter()
        self._flags = ("--network=none", "--cpu-num-from-quota", *extra_flags)
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    @property
    def runsc_root(self) -> Path:
        return self._runsc_root

    def _runsc_cmd(self, *args: str) -> list[str]:
        return [self._runsc, "--root", str(self._runsc_root), *args]

    def _write_bundle(self, request: SandboxRequest, cid: str) -> Path:
        bundle = self._jobs / cid
        bundle.mkdir()
        limits = request.limits
        cfg = oci.config(
            rootfs=self._rootfs,
            argv=oci.interpreter_argv(request.argv),
            env=oci.environment(request.env),
            cwd=request.cwd,
            mount_list=oci.mounts(self._layout, self._empty, request.mounts, limits),
            limits=limits,
            cgroup=f"/{cid}",
        )
        (bundle / "config.json").write_text(json.dumps(cfg, indent=1))
        return bundle

    def run(self, request: SandboxRequest) -> SandboxOutcome:
        slug = re.sub(r"[^A-Za-z0-9_.-]", "-", request.job_id)[:40]
        cid = f"pitwall-{slug}-{uuid.uuid4().hex[:12]}"
        limits = request.limits
        started = time.monotonic()
        bundle = self._write_bundle(request, cid)
        cgroup = _MemoryCgroup(cid, limits.memory_mb * 1024 * 1024)
        out, err = HeadBuffer(limits.output_mb * 1024 * 1024), HeadTailBuffer(limits.log_kb * 1024)
        readers: list[StreamReader] = []
        run: _Run | None = None
        timed_out = False
        try:
            proc = subprocess.Popen(
                self._runsc_cmd(*self._flags, "--log", str(bundle / "runsc.log"),
                                "run", "--bundle", str(bundle), cid),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True, env={"PATH": "/usr/bin:/bin"},
            )
            run = _Run(cid, proc)
            with self._lock:
                self._runs[request.job_id] = run
            assert proc.stdout is not None and proc.stderr is not None
            readers = [StreamReader(proc.stdout, out), StreamReader(proc.stderr, err)]
            for r in readers:
                r.start()
            timed_out = self._wait(run, started + limits.timeout_s)
            exit_code = proc.returncode
        finally:
            if run is not None:
                self._stop(run)
                with self._lock:
                    self._runs.pop(request.job_id, None)
            self._delete(cid)
            for r in readers:
                r.join(timeout=5)
            oom = cgroup.oom_killed()
            cgroup.remove()
            log = _tail(bundle / "runsc.log")
            shutil.rmtree(bundle, ignore_errors=True)
        first = [r.first_byte_at for r in readers if r.first_byte_at is not None]
        return SandboxOutcome(
            exit_code=exit_code, timed_out=timed_out,
            cancelled=run.cancelled.is_set() and not timed_out, oom=oom,
            stdout=out.getvalue(), stdout_truncated=out.truncated,
            stderr=err.getvalue(), stderr_truncated=err.truncated,
            duration_s=time.monotonic() - started,
            start_s=(min(first) - started) if first else None,
            backend_log=log if exit_code != 0 else "",
        )

    def _wait(self, run: _Run, deadline: float) -> bool:
        """Wait for the run to end; stop it at the deadline or on cancel. True if timed out."""
        while run.proc.poll() is None:
            if run.cancelled.is_set():
                self._stop(run)
                return False
            if time.monotonic() >= deadline:
                self._stop(run)
                return True
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.proc.wait(timeout=min(_POLL_S * 5, max(0.0, deadline - time.monotonic())))
        return False

    def _stop(self, run: _Run) -> None:
        """Kill the container; escalate until the runsc process is gone (≤ ~1 s)."""
        if run.proc.poll() is not None:
            return
        self._quiet(self._runsc_cmd("kill", run.container_id, "KILL"))
        try:
            run.proc.wait(timeout=_GRACE_S / 2)
            return
        except subprocess.TimeoutExpired:
            pass
        self._delete(run.container_id)
        try:
            run.proc.wait(timeout=_GRACE_S / 2)
        except subprocess.TimeoutExpired:
            os.killpg(run.proc.pid, signal.SIGKILL)
            run.proc.wait()

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


def _tail(path: Path, limit: int = 4096) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", "replace")
