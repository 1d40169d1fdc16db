"""``DockerBackend``: runs a job in a Docker container on the ``runsc`` (gVisor) runtime.

The policy is the gVisor backend's (``oci.py``): the same sandbox image (its root file
system, ``rootfs.py``, imported into the engine once per digest, no registry needed:
``image.docker_image``), read-only, with only the job's own mounts on top; the same
environment and rlimits; the engine adds
what a daemon can: the memory/pids/CPU cgroup, no network, no IPC namespace (so no
writable ``/dev/shm``), and the OOM verdict. Per job: a container with a unique name,
never reused, whose stdout/stderr are streamed through the attach API into capped
buffers (the log driver is ``none``: nothing of the job's output lands on the host's
disk). The wall-clock timeout and ``kill`` are enforced from outside with
``container.kill()``; ``finally`` always force-removes the container. Each container also
has a supervisor process (:mod:`.supervisor`) that force-removes it if the worker dies, or
if the worker has not ended it shortly after its wall clock (a stopped worker).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import docker
import docker.errors
from docker.types import LogConfig, Ulimit
from docker.types import Mount as DockerMount

from pitwall.errors import SandboxError
from pitwall_executor.sandbox import affinity, oci, orphans, owner
from pitwall_executor.sandbox.base import SCRATCH, SandboxOutcome, SandboxRequest, SessionEnd
from pitwall_executor.sandbox.capture import HeadTailBuffer
from pitwall_executor.sandbox.image import docker_image
from pitwall_executor.sandbox.orphans import HOST_LABEL, OWNER_LABEL
from pitwall_executor.sandbox.rootfs import Rootfs, RootfsStore
from pitwall_executor.sandbox.supervisor import GRACE_S as SUPERVISOR_GRACE_S
from pitwall_executor.sandbox.supervisor import Supervisor

if TYPE_CHECKING:
    from docker.models.containers import Container

    from pitwall.models import Limits

log = logging.getLogger(__name__)
RUNTIME = "runsc"
JOB_LABEL = "pitwall.job"
__all__ = ["HOST_LABEL", "JOB_LABEL", "OWNER_LABEL", "DockerBackend", "DockerSession"]
_POLL_S = 0.02
_GRACE_S = 0.5
_OOM_SETTLE_S = 3.0  # the engine can report OOM seconds after the exit on a loaded host


@dataclass
class _Run:
    name: str
    guard: Supervisor | None = None
    container: Container | None = None
    exit_code: int | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    exited: threading.Event = field(default_factory=threading.Event)


class _SocketWriter(io.RawIOBase):
    """The container's stdin: the write half of the attach socket. ``close`` half-closes
    it, and the engine closes the container's stdin (``StdinOnce``): the process sees EOF."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:  # the feeder writes frames with os.write
        return self._sock.fileno()

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed sandbox stdin")
        view = memoryview(data).cast("B")
        self._sock.sendall(view)
        return len(view)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_WR)
        super().close()


class DockerBackend:
    """Runs each request in a fresh container on the ``runsc`` runtime, no network.

    ``image`` overrides the sandbox image (by default the image of this interpreter, venv
    and SDK: found or built in the user's store, :mod:`.rootfs`, and imported into the
    engine if missing). ``state_dir`` is kept for the composition (nothing is in it).
    """

    name = "docker"

    def __init__(self, state_dir: Path, *, image: str | None = None,
                 client: docker.DockerClient | None = None,
                 layout: oci.PythonLayout | None = None) -> None:
        try:
            self._client = client or docker.from_env()
            runtimes = self._client.info().get("Runtimes", {})
        except docker.errors.DockerException as exc:
            raise SandboxError(f"the Docker engine is not reachable ({exc}); start it "
                               "(make services) or choose another sandbox backend") from exc
        if RUNTIME not in runtimes:
            raise SandboxError(f"the Docker engine has no {RUNTIME!r} runtime; register gVisor "
                               "in /etc/docker/daemon.json or choose another sandbox backend")
        self._state = state_dir.resolve()
        self.rootfs: Rootfs | None = None
        if image is None:
            store = RootfsStore()
            self.rootfs = store.ensure(layout or oci.PythonLayout.of_this_interpreter())
            self._image_id = docker_image(self._client, self.rootfs, store=store)
        else:
            try:
                found = self._client.images.get(image).id
            except docker.errors.ImageNotFound as exc:
                raise SandboxError(f"sandbox image {image!r} is not in the Docker engine; "
                                   "load it or leave the image unset") from exc
            if found is None:
                raise SandboxError(f"sandbox image {image!r} has no id")
            self._image_id = found
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._socket = _unix_socket(self._client)
        if self._socket is None:
            log.warning("the Docker engine is not on a unix socket: containers have no "
                        "supervisor; a dead worker's are removed by reap_orphans only")
        self.destroy_orphans()

    def destroy_orphans(self) -> list[str]:
        """Remove (forcibly) the containers of dead worker processes of this host; names.

        Their supervisors normally did it within seconds of the death; this catches the
        containers whose supervisor died too (:func:`orphans.reap_containers`). Each
        container carries its owner's labels; a live owner's and another host's are left
        alone.
        """
        return list(orphans.reap_containers(self._client).sandboxes)

    @property
    def image_id(self) -> str:
        """The image every container starts from (``sha256:...``), for the run's manifest."""
        return self._image_id

    @property
    def image(self) -> str:
        """The run manifest's "image" (same as :attr:`image_id`)."""
        return self._image_id

    @property
    def client(self) -> docker.DockerClient:
        return self._client

    def _mounts(self, request: SandboxRequest) -> list[DockerMount]:
        # The OCI mount list is the policy; keep its binds (the job's: the engine makes
        # /proc, /dev and the /scratch tmpfs itself).
        if self.rootfs is not None:
            self.rootfs.touch()  # in use: a build's garbage collection keeps it
        return [
            DockerMount(target=m["destination"], source=m["source"], type="bind",
                        read_only="ro" in m["options"])
            for m in oci.mounts(request.mounts, request.limits) if m["type"] == "bind"
        ]

    def container_options(self, request: SandboxRequest, name: str) -> dict[str, Any]:
        """The ``containers.create`` arguments of one run (public to be inspectable)."""
        limits: Limits = request.limits
        res = oci.resources(limits)
        memory = res["memory"]["limit"]
        return {
            "image": self._image_id,
            "command": oci.interpreter_argv(request.argv),
            "name": name,
            "hostname": "sandbox",
            "labels": {JOB_LABEL: request.job_id, OWNER_LABEL: owner.current().token,
                       HOST_LABEL: owner.host()},
            "environment": oci.environment(request.env),
            "working_dir": request.cwd,
            "user": f"{oci.SANDBOX_UID}:{oci.SANDBOX_UID}",
            "runtime": RUNTIME,
            "network_mode": "none",
            "ipc_mode": "none",  # no /dev/shm: nothing writable but /scratch
            "read_only": True,
            "mounts": self._mounts(request),
            "tmpfs": {SCRATCH: f"size={limits.scratch_mb}m,mode=1777"},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "mem_limit": memory,
            "memswap_limit": memory,  # equal: no swap
            "pids_limit": res["pids"]["limit"],
            "nano_cpus": int(limits.cpus * 1e9),
            "cpu_shares": oci.SANDBOX_CPU_SHARES,
            "ulimits": [Ulimit(name=r["type"].removeprefix("RLIMIT_").lower(),
                               soft=r["soft"], hard=r["hard"]) for r in oci.rlimits(limits)],
            "log_config": LogConfig(type="none"),
            # stdin is attached (the event-mode channel); closing our end closes the
            # container's (docker-py sets StdinOnce with stdin_open when not detached): a
            # one-shot run sees EOF at once.
            "stdin_open": True,
            "tty": False,
        }

    def run(self, request: SandboxRequest) -> SandboxOutcome:
        session = self.start(request)
        with affinity.one_cpu_run(session, request.limits.cpus):
            return session.collect(request)

    def start(self, request: SandboxRequest) -> DockerSession:
        """Start a container with live pipes (event mode); see :class:`DockerSession`.

        Same policy, limits and cleanup as :meth:`run`; the wall clock
        (``request.limits.timeout_s``) starts now and is enforced by a watchdog thread.
        """
        return self.launch(request, arm=True)

    def launch(self, request: SandboxRequest, *, arm: bool) -> DockerSession:
        """Start a session; ``arm=False`` leaves the wall clock off until
        :meth:`DockerSession.arm`."""
        slug = re.sub(r"[^A-Za-z0-9_.-]", "-", request.job_id)[:32]
        run = _Run(f"{orphans.CID_PREFIX}{owner.current().token}-{slug}-{uuid.uuid4().hex[:12]}")
        started = time.monotonic()
        deadline = started + request.limits.timeout_s if arm else math.inf
        options = self.container_options(request, run.name)
        if self._socket is not None:  # before the container exists: the worker may die
            run.guard = Supervisor.for_container(self._socket, run.name, deadline=deadline)
        sock: Any = None
        with self._lock:
            self._runs[request.job_id] = run
        try:
            run.container = self._client.containers.create(**options)
            # Attached before start, so not a byte is missed; the stream ends at exit.
            sock = self._client.api.attach_socket(
                run.container.id or run.name,
                params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            run.container.start()
        except docker.errors.DockerException as exc:
            self._forget(request.job_id, run)
            if sock is not None:
                _raw_socket(sock).close()
            if run.container is not None:
                with contextlib.suppress(docker.errors.DockerException):
                    self._remove(run.container)
            if run.guard is not None:
                run.guard.release()
            raise SandboxError(f"the Docker engine failed to run job {request.job_id}: {exc}"
                               ) from exc
        return DockerSession(self, request, run, sock, started, deadline)

    def _forget(self, job_id: str, run: _Run) -> None:
        with self._lock:
            if self._runs.get(job_id) is run:
                del self._runs[job_id]

    def _oom_killed(self, run: _Run, *, stopped: bool) -> bool | None:
        """The engine's OOM verdict. Its OOM event can land just after the exit event, so
        a SIGKILL we did not send (exit 137) is re-read for up to ``_OOM_SETTLE_S``."""
        assert run.container is not None
        settle = time.monotonic() + (_OOM_SETTLE_S if run.exit_code == 137 and not stopped else 0)
        while True:
            try:
                run.container.reload()
            except docker.errors.NotFound:  # removed by an escalated stop
                return None
            if run.container.attrs["State"].get("OOMKilled") or time.monotonic() >= settle:
                return bool(run.container.attrs["State"].get("OOMKilled"))
            time.sleep(_POLL_S * 2)

    def _await_exit(self, run: _Run) -> None:
        assert run.container is not None
        try:
            run.exit_code = int(run.container.wait()["StatusCode"])
        except Exception:  # removed, or the engine went away: no exit code
            pass
        finally:
            run.exited.set()

    def _stop(self, run: _Run) -> None:
        """Kill the container; escalate to a forced removal if it has not exited in time."""
        if run.container is None or run.exited.is_set():
            return
        with contextlib.suppress(docker.errors.APIError):
            run.container.kill()
        if not run.exited.wait(_GRACE_S):
            self._remove(run.container)
            run.exited.wait(_GRACE_S)

    def _remove(self, container: Container) -> None:
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: a removal is already in progress
                raise

    def kill(self, job_id: str) -> None:
        """Cancel a running job (from any thread); the run ends within about a second."""
        with self._lock:
            run = self._runs.get(job_id)
        if run is None:
            return
        run.cancelled.set()
        if run.container is not None and not run.exited.is_set():
            with contextlib.suppress(docker.errors.APIError):
                run.container.kill()


def _unix_socket(client: docker.DockerClient) -> str | None:
    """The path of the engine's unix socket, for the supervisors; None over TCP or SSH."""
    adapter = getattr(client.api, "_custom_adapter", None)  # docker-py keeps it there
    path = getattr(adapter, "socket_path", None)
    return path if isinstance(path, str) and os.path.exists(path) else None


def _raw_socket(sock: Any) -> socket.socket:
    """The ``socket.socket`` under what ``attach_socket`` returns (a ``SocketIO`` on a
    unix socket, the socket itself over TLS)."""
    raw = getattr(sock, "_sock", sock)
    assert isinstance(raw, socket.socket), type(raw)
    return raw


class DockerSession(SessionEnd):
    """A started container with live pipes (``SandboxSession``, docs/architecture.md §5).

    The container's stdin, stdout and stderr travel over one attach socket (the engine
    multiplexes stdout and stderr in frames). ``stdin`` writes to it; closing it
    half-closes the socket and the process sees EOF. A demultiplexing thread copies
    stdout frames into a pipe whose read end is ``stdout`` (EOF when the container has
    exited) and stderr frames into the request's ``log_kb`` head+tail cap. A watchdog
    thread enforces the wall clock from outside: at the deadline, or on :meth:`kill`
    (any thread), it kills the container (``kill``, then a forced removal; gone within
    ~1 s), so a blocked ``stdout.read`` returns EOF and a ``stdin.write`` raises. When
    the container has ended the watchdog reads the OOM verdict and removes it.
    :meth:`wait` returns the same :class:`SandboxOutcome` as ``run`` with ``stdout``
    empty (the caller consumed it); use the session as a context manager to kill, wait
    and close both pipes.
    """

    def __init__(self, backend: DockerBackend, request: SandboxRequest, run: _Run, sock: Any,
                 started: float, deadline: float) -> None:
        self._sock_ref = sock  # keeps the HTTP response (and so the socket) alive
        self._sock = _raw_socket(sock)
        # Blocking, no timeout: the client's 60 s default would end a quiet session's
        # stdout early, and the feeder writes to the fd directly.
        self._sock.settimeout(None)
        read_fd, self._out_fd = os.pipe()
        self.stdin = cast(BinaryIO, _SocketWriter(self._sock))
        self.stdout = cast(BinaryIO, os.fdopen(read_fd, "rb"))
        self.started = started
        self.container_name = run.name
        self._what = f"container {run.name}"
        self._first_stderr: float | None = None
        self._backend, self._request, self._run = backend, request, run
        self._deadline = deadline  # math.inf: not armed yet
        self._err = HeadTailBuffer(request.limits.log_kb * 1024)
        self._outcome: SandboxOutcome | None = None
        self._done = threading.Event()
        self._demux = threading.Thread(target=self._read, daemon=True, name="sandbox-attach")
        self._demux.start()
        threading.Thread(target=backend._await_exit, args=(run,), daemon=True,
                         name="sandbox-wait").start()
        threading.Thread(target=self._watch, daemon=True,
                         name=f"sandbox-watchdog-{run.name}").start()

    @property
    def first_stderr_at(self) -> float | None:
        return self._first_stderr

    @property
    def alive(self) -> bool:
        return not (self._run.exited.is_set() or self._run.cancelled.is_set())

    def pin_cpu(self, cpu: int) -> bool:
        """Restrict the container to ``cpu`` (:mod:`.affinity`) through its cgroup: runsc
        has no ``update`` command, so the engine's ``docker update`` fails with it."""
        container = self._run.container
        if container is None:
            return False
        parent = container.attrs.get("HostConfig", {}).get("CgroupParent") or "/docker"
        return affinity.pin_cgroup(f"{parent}/{container.id}", cpu)

    def arm(self, timeout_s: float) -> None:
        """Start (or restart) the wall clock: the container is killed ``timeout_s`` from now."""
        self._deadline = time.monotonic() + timeout_s
        if self._run.guard is not None:
            self._run.guard.arm(self._deadline)

    def kill(self) -> None:
        """Stop the container (from any thread); :meth:`wait` then reports ``cancelled``."""
        self._run.cancelled.set()

    def _recv(self, n: int) -> bytes | None:
        data = bytearray()
        while len(data) < n:
            chunk = self._sock.recv(min(n - len(data), 1 << 16))
            if not chunk:
                return None
            data += chunk
        return bytes(data)

    def _read(self) -> None:
        """Demultiplex the attach stream: ``[stream, 0, 0, 0, size (big-endian u32)]``."""
        to_stdout = True
        try:
            while (header := self._recv(8)) is not None:
                payload = self._recv(int.from_bytes(header[4:8], "big"))
                if payload is None:
                    break
                if header[0] == 2:
                    if self._first_stderr is None:
                        self._first_stderr = time.monotonic()
                    self._err.feed(payload)
                elif header[0] == 1 and to_stdout:
                    try:
                        view = memoryview(payload)
                        while view:
                            view = view[os.write(self._out_fd, view):]
                    except OSError:  # the caller closed stdout: keep draining stderr
                        to_stdout = False
        except OSError:  # the socket was closed under us: the run is over
            pass
        finally:
            os.close(self._out_fd)

    def _watch(self) -> None:
        run, backend, timed_out = self._run, self._backend, False
        oom: bool | None = None
        try:
            while not run.exited.wait(
                    min(_POLL_S, max(0.0, self._deadline - time.monotonic()))):
                if run.cancelled.is_set():
                    break
                if time.monotonic() >= self._deadline:
                    timed_out = True
                    break
            # Found ended past the supervisor's deadline: this thread did not run (the
            # worker was stopped) and the supervisor removed it for the wall clock.
            timed_out = timed_out or time.monotonic() >= self._deadline + SUPERVISOR_GRACE_S
            backend._stop(run)
            self._demux.join(timeout=5)  # the stream ends when the container has exited
            oom = backend._oom_killed(run, stopped=timed_out or run.cancelled.is_set())
        except docker.errors.DockerException:
            log.exception("the Docker engine failed while watching %s", run.name)
        finally:
            backend._forget(self._request.job_id, run)
            with contextlib.suppress(OSError):
                self._sock.close()
            removed = False
            if run.container is not None:
                with contextlib.suppress(docker.errors.DockerException):
                    backend._remove(run.container)
                    removed = True
            if run.guard is not None and removed:  # else it stays, to remove it later
                run.guard.release()
            self._outcome = self.ended(exit_code=run.exit_code, timed_out=timed_out,
                                       cancelled=run.cancelled.is_set(), oom=oom)
            self._done.set()
