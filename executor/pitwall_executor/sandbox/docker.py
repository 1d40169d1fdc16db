"""``DockerBackend``: runs a job in a Docker container on the ``runsc`` (gVisor) runtime.

The policy is the gVisor backend's (``oci.py``): the same skeleton rootfs (imported once
as an image, no registry needed), the same read-only binds of the interpreter, the
project's site-packages and the SDK, the same environment and rlimits; the engine adds
what a daemon can: the memory/pids/CPU cgroup, no network, no IPC namespace (so no
writable ``/dev/shm``), and the OOM verdict. Per job: a container with a unique name,
never reused, whose stdout/stderr are streamed through the attach API into capped
buffers (the log driver is ``none``: nothing of the job's output lands on the host's
disk). The wall-clock timeout and ``kill`` are enforced from outside with
``container.kill()``; ``finally`` always force-removes the container.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import tarfile
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
from docker.types import LogConfig, Ulimit
from docker.types import Mount as DockerMount

from pitwall.errors import SandboxError
from pitwall_executor.sandbox import oci
from pitwall_executor.sandbox.base import SCRATCH, SandboxOutcome, SandboxRequest
from pitwall_executor.sandbox.capture import HeadBuffer, HeadTailBuffer

if TYPE_CHECKING:
    from docker.models.containers import Container
    from docker.types.daemon import CancellableStream

    from pitwall.models import Limits

BASE_IMAGE = "pitwall-sandbox-base:1"
RUNTIME = "runsc"
JOB_LABEL = "pitwall.job"
_SKELETON_LABEL = "pitwall.skeleton"
_POLL_S = 0.02
_GRACE_S = 0.5
_OOM_SETTLE_S = 3.0  # the engine can report OOM seconds after the exit on a loaded host


def _skeleton_tar() -> bytes:
    """The skeleton rootfs of ``oci.ensure_rootfs`` as a reproducible tar (root-owned)."""

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        return info

    with tempfile.TemporaryDirectory(prefix="pitwall-skeleton-") as tmp:
        root = oci.ensure_rootfs(Path(tmp) / "rootfs")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(root.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(root)), recursive=False,
                        filter=normalise)
        return buf.getvalue()


def ensure_base_image(client: docker.DockerClient) -> str:
    """The id of the sandbox's base image, imported offline from the skeleton if missing.

    The image holds only mount points, the merged-/usr symlinks and ``/etc/passwd``:
    everything executable comes from read-only binds. It is re-imported when the
    skeleton changes (its sha256 is a label), so a stale tag is never used.
    """
    data = _skeleton_tar()
    digest = hashlib.sha256(data).hexdigest()
    with contextlib.suppress(docker.errors.ImageNotFound):
        image = client.images.get(BASE_IMAGE)
        if image.labels.get(_SKELETON_LABEL) == digest and image.id is not None:
            return image.id
    repository, tag = BASE_IMAGE.split(":")
    client.api.import_image_from_data(data, repository=repository, tag=tag,
                                      changes=[f"LABEL {_SKELETON_LABEL}={digest}"])
    image_id = client.images.get(BASE_IMAGE).id
    if image_id is None:
        raise SandboxError(f"docker import of {BASE_IMAGE} produced no image id")
    return image_id


@dataclass
class _Run:
    name: str
    container: Container | None = None
    exit_code: int | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    exited: threading.Event = field(default_factory=threading.Event)


class _AttachReader(threading.Thread):
    """Drains the container's multiplexed stdout/stderr into the capped buffers."""

    def __init__(self, stream: CancellableStream[tuple[bytes | None, bytes | None]],
                 out: HeadBuffer, err: HeadTailBuffer) -> None:
        super().__init__(daemon=True, name="sandbox-attach")
        self.stream = stream
        self._out, self._err = out, err
        self.first_byte_at: float | None = None

    def run(self) -> None:
        try:
            for stdout, stderr in self.stream:
                if self.first_byte_at is None:
                    self.first_byte_at = time.monotonic()
                if stdout:
                    self._out.feed(stdout)
                if stderr:
                    self._err.feed(stderr)
        except Exception:  # the stream was closed under us: the run is over
            pass


class DockerBackend:
    """Runs each request in a fresh container on the ``runsc`` runtime, no network.

    ``state_dir`` holds the empty directory bound read-only over ``/tmp`` and the
    interpreter's own site-packages. ``image`` overrides the base image (by default the
    skeleton is imported offline, see :func:`ensure_base_image`).
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
        self._empty = self._state / "empty"
        self._empty.mkdir(parents=True, exist_ok=True)
        self._layout = layout or oci.PythonLayout.of_this_interpreter()
        if image is None:
            self._image_id = ensure_base_image(self._client)
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
        # The OCI mount list is the policy; keep its binds (the engine makes /proc, /dev
        # and the /scratch tmpfs itself).
        return [
            DockerMount(target=m["destination"], source=m["source"], type="bind",
                        read_only="ro" in m["options"])
            for m in oci.mounts(self._layout, self._empty, request.mounts, request.limits)
            if m["type"] == "bind"
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
            "labels": {JOB_LABEL: request.job_id},
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
            "ulimits": [Ulimit(name=r["type"].removeprefix("RLIMIT_").lower(),
                               soft=r["soft"], hard=r["hard"]) for r in oci.rlimits(limits)],
            "log_config": LogConfig(type="none"),
            "stdin_open": False,
            "tty": False,
        }

    def run(self, request: SandboxRequest) -> SandboxOutcome:
        slug = re.sub(r"[^A-Za-z0-9_.-]", "-", request.job_id)[:40]
        run = _Run(f"pitwall-{slug}-{uuid.uuid4().hex[:12]}")
        limits = request.limits
        started = time.monotonic()
        out, err = HeadBuffer(limits.output_mb * 1024 * 1024), HeadTailBuffer(limits.log_kb * 1024)
        options = self.container_options(request, run.name)
        reader: _AttachReader | None = None
        timed_out = False
        oom: bool | None = None
        with self._lock:
            self._runs[request.job_id] = run
        try:
            run.container = self._client.containers.create(**options)
            # Attached before start, so not a byte is missed; the stream ends at exit.
            stream = self._client.api.attach(run.container.id or run.name, stream=True,
                                             demux=True)
            reader = _AttachReader(stream, out, err)
            reader.start()
            if not run.cancelled.is_set():
                run.container.start()
                threading.Thread(target=self._await_exit, args=(run,), daemon=True,
                                 name="sandbox-wait").start()
                timed_out = self._wait(run, started + limits.timeout_s)
                reader.join(timeout=5)
            oom = self._oom_killed(run, stopped=timed_out or run.cancelled.is_set())
        except docker.errors.DockerException as exc:
            raise SandboxError(f"the Docker engine failed to run job {request.job_id}: {exc}"
                               ) from exc
        finally:
            with self._lock:
                self._runs.pop(request.job_id, None)
            if reader is not None:
                reader.stream.close()
            if run.container is not None:
                self._remove(run.container)
        first = reader.first_byte_at if reader is not None else None
        return SandboxOutcome(
            exit_code=run.exit_code, timed_out=timed_out,
            cancelled=run.cancelled.is_set() and not timed_out, oom=oom,
            stdout=out.getvalue(), stdout_truncated=out.truncated,
            stderr=err.getvalue(), stderr_truncated=err.truncated,
            duration_s=time.monotonic() - started,
            start_s=(first - started) if first is not None else None,
        )

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

    def _wait(self, run: _Run, deadline: float) -> bool:
        """Wait for the container to exit; stop it at the deadline or on cancel."""
        while not run.exited.wait(timeout=max(0.0, min(_POLL_S * 5, deadline - time.monotonic()))):
            if run.cancelled.is_set():
                self._stop(run)
                return False
            if time.monotonic() >= deadline:
                self._stop(run)
                return True
        return False

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
