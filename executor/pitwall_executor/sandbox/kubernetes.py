"""``KubernetesBackend``: one Pod per job on the ``gvisor`` RuntimeClass (docs/scale-out.md,
"Kubernetes backend").

The policy is the OCI config's (``oci.py``, docs/security.md): uid 65534, read-only root
(the sandbox image), no capabilities, no privilege escalation, the runtime's default
seccomp profile, no service-account token, no service links, no host namespaces; the same
environment and rlimits; requests equal limits (cpu, memory, ephemeral-storage), and
``activeDeadlineSeconds`` as a backstop behind the worker's own wall clock. The Pod runs in
the sandbox namespace, whose NetworkPolicy denies all egress and ingress
(``pitwall_executor/deploy/render.py``).

**Inputs** (docs/scale-out.md, "Input staging"): the worker's host directories cannot be
mounted into a Pod on another node, and nothing in the Pod may fetch them (it has no
network and no credentials). The worker streams them in: an init container ``stage``
(same image, same policy) reads one length-prefixed tar from its stdin over the Pod's
attach stream and unpacks it into an ``emptyDir``; the runner container mounts that volume
read-only at each request mount's target. The archive is capped by ``stage_mb``.

**Outputs**: the runner container is attached (stdin, stdout, stderr on separate channels
of one WebSocket, ``binary``): stdout is the result channel, stderr the log, both capped as
on the other backends. The runner's first instruction is a gate that waits for one byte on
stdin, so nothing is written before the worker is attached; the gate also sets the
rlimits (Kubernetes has no per-Pod RLIMIT_NPROC or RLIMIT_FSIZE). Event mode uses the
same attach stream as a live session. Cancel and the wall clock delete the Pod.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import tarfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from pitwall.errors import SandboxError
from pitwall.models import Limits
from pitwall_executor.sandbox import oci
from pitwall_executor.sandbox.base import (
    SCRATCH,
    SandboxOutcome,
    SandboxRequest,
    SessionEnd,
)
from pitwall_executor.sandbox.capture import HeadTailBuffer

if TYPE_CHECKING:
    from pitwall_executor.config import Config

log = logging.getLogger(__name__)

#: Labels every sandbox Pod carries; the sandbox namespace's NetworkPolicy selects them.
APP_LABEL = "app.kubernetes.io/name"
APP = "pitwall-sandbox"
JOB_LABEL = "pitwall.io/job"
JOB_ANNOTATION = "pitwall.io/job-id"
STAGE_CONTAINER = "stage"
RUNNER_CONTAINER = "runner"
STAGE_DIR = "/stage"
#: The byte that releases the runner's gate once the worker is attached.
GO = b"G"
#: Ephemeral storage on top of scratch and the staged inputs: the container logs the
#: kubelet keeps of stdout/stderr and the runtime's own files.
LOG_ALLOWANCE_MB = 64
_POLL_S = 0.2

# The init container: unpack exactly one length-prefixed tar from stdin (the trusted
# worker's) into the emptyDir. Standard library only; the "data" filter refuses links out,
# absolute names and device files even though the archive is the worker's own.
_STAGE_SCRIPT = """\
import sys, tarfile
cap = int(sys.argv[1])
src = sys.stdin.buffer
size = int.from_bytes(src.read(8), "big")
if size > cap:
    sys.exit(f"staged inputs of {size} bytes exceed the cap of {cap}")
class Part:
    left = size
    def read(self, n=-1):
        n = self.left if n < 0 else min(n, self.left)
        data = src.read(n)
        self.left -= len(data)
        return data
with tarfile.open(fileobj=Part(), mode="r|") as tar:
    tar.extractall(sys.argv[2], filter="data")
"""

# The runner's gate: the rlimits of oci.rlimits, then wait for the worker's "go" (read
# one byte, unbuffered: the rest of stdin is the runner's), then become the runner.
_GATE_SCRIPT = """\
import os, resource, sys
for name, value in {limits!r}:
    resource.setrlimit(getattr(resource, name), (value, value))
if os.read(0, 1) != {go!r}:
    sys.exit(70)
os.execv(sys.argv[1], sys.argv[1:])
"""


@dataclass(frozen=True)
class KubernetesSettings:
    """Where and how job Pods run (rendered from the deploy values, docs/scale-out.md)."""

    namespace: str = "pitwall-sandbox"
    image: str = "pitwall/sandbox:TAG"
    runtime_class: str = "gvisor"
    #: Cap of the staged inputs (bundle + slice), bytes through the API server's attach.
    stage_mb: int = 512
    #: Time from Pod creation to "go" (scheduling, image, staging); added to the job's
    #: wall clock for ``activeDeadlineSeconds`` (the backstop: the worker's clock is exact).
    start_allowance_s: int = 120
    image_pull_policy: str = "IfNotPresent"
    node_selector: dict[str, str] = field(default_factory=dict)


def settings_of(config: Config) -> KubernetesSettings:
    """The backend's settings from the configuration's ``kubernetes`` section."""
    k = config.kubernetes
    return KubernetesSettings(namespace=k.namespace, image=k.image,
                              runtime_class=k.runtime_class, stage_mb=k.stage_mb,
                              start_allowance_s=k.start_allowance_s)


def label_value(job_id: str) -> str:
    """A job id as a label value (<= 63 characters, alphanumeric at both ends)."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", job_id)[:63].strip("-_.")
    return value or "job"


def pod_name(job_id: str) -> str:
    """A fresh Pod name per run: never reused, so a retry never meets its predecessor."""
    slug = re.sub(r"[^a-z0-9-]", "-", job_id.lower())[:30].strip("-") or "job"
    return f"pitwall-{slug}-{uuid.uuid4().hex[:12]}"


def quantities(limits: Limits, settings: KubernetesSettings) -> dict[str, str]:
    """Requests = limits of every container (Guaranteed QoS: nothing is overcommitted)."""
    storage = limits.scratch_mb + settings.stage_mb + LOG_ALLOWANCE_MB
    return {"cpu": f"{max(1, round(limits.cpus * 1000))}m", "memory": f"{limits.memory_mb}Mi",
            "ephemeral-storage": f"{storage}Mi"}


def _security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True, "runAsUser": oci.SANDBOX_UID, "runAsGroup": oci.SANDBOX_UID,
        "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "privileged": False, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _python() -> str:
    return oci.interpreter_argv(("python",))[0]


def _env(request: SandboxRequest) -> list[dict[str, str]]:
    pairs = (item.partition("=") for item in oci.environment(request.env))
    return [{"name": k, "value": v} for k, _, v in pairs]


def _stage_container(request: SandboxRequest, settings: KubernetesSettings) -> dict[str, Any]:
    res = quantities(request.limits, settings)
    return {
        "name": STAGE_CONTAINER, "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [_python(), "-I", "-S", "-c", _STAGE_SCRIPT,
                    str(settings.stage_mb * 1024 * 1024), STAGE_DIR],
        "stdin": True, "stdinOnce": True, "tty": False,
        "env": _env(request), "workingDir": STAGE_DIR,
        "resources": {"requests": dict(res), "limits": dict(res)},
        "securityContext": _security_context(),
        "volumeMounts": [{"name": "stage", "mountPath": STAGE_DIR}],
    }


def _runner_container(request: SandboxRequest, settings: KubernetesSettings) -> dict[str, Any]:
    res = quantities(request.limits, settings)
    limits = [(r["type"], r["hard"]) for r in oci.rlimits(request.limits)]
    gate = _GATE_SCRIPT.format(limits=limits, go=GO)
    mounts = [{"name": "stage", "mountPath": m.target, "subPath": m.target.lstrip("/"),
               "readOnly": m.readonly} for m in request.mounts]
    return {
        "name": RUNNER_CONTAINER, "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": [_python(), "-I", "-S", "-c", gate,
                    *oci.interpreter_argv(request.argv)],
        "stdin": True, "stdinOnce": True, "tty": False,
        "env": _env(request), "workingDir": request.cwd,
        "resources": {"requests": dict(res), "limits": dict(res)},
        "securityContext": _security_context(),
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}, *mounts],
    }


def pod_manifest(request: SandboxRequest, settings: KubernetesSettings,
                 name: str | None = None) -> dict[str, Any]:
    """The Pod of one run (a plain dict, validated against the Kubernetes schema in
    ``tests/deploy``). Pure: the same request and settings give the same Pod."""
    limits = request.limits
    spec: dict[str, Any] = {
        "runtimeClassName": settings.runtime_class,
        "restartPolicy": "Never",
        "activeDeadlineSeconds": math.ceil(limits.timeout_s) + settings.start_allowance_s,
        "terminationGracePeriodSeconds": 0,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # no Service addresses in the sandbox's environment
        "hostNetwork": False, "hostPID": False, "hostIPC": False,
        "shareProcessNamespace": False,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": oci.SANDBOX_UID,
            "runAsGroup": oci.SANDBOX_UID, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [_stage_container(request, settings)],
        "containers": [_runner_container(request, settings)],
        "volumes": [
            {"name": "stage", "emptyDir": {"sizeLimit": f"{settings.stage_mb}Mi"}},
            {"name": "scratch", "emptyDir": {"sizeLimit": f"{limits.scratch_mb}Mi"}},
        ],
    }
    if settings.node_selector:
        spec["nodeSelector"] = dict(settings.node_selector)
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name or pod_name(request.job_id), "namespace": settings.namespace,
            "labels": {APP_LABEL: APP, "app.kubernetes.io/part-of": "pitwall",
                       JOB_LABEL: label_value(request.job_id)},
            "annotations": {JOB_ANNOTATION: request.job_id},
        },
        "spec": spec,
    }


def stage_archive(request: SandboxRequest, cap_bytes: int) -> bytes:
    """The request's mounts as one tar (each source under its target, without the leading
    ``/``), prefixed with its length: what the ``stage`` init container unpacks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for mount in request.mounts:
            tar.add(str(oci.check_source(mount.source)), arcname=mount.target.lstrip("/"))
    data = buf.getvalue()
    if len(data) > cap_bytes:
        raise SandboxError(f"job {request.job_id}'s inputs are {len(data) >> 20} MiB, over "
                           f"the Kubernetes backend's stage_mb of {cap_bytes >> 20} MiB; "
                           "raise it or narrow the data request")
    return len(data).to_bytes(8, "big") + data


Attach = Callable[..., Any]


def _default_attach(core: Any, name: str, namespace: str, container: str,
                    *, stdout: bool) -> Any:
    from kubernetes.stream import stream

    return stream(core.connect_get_namespaced_pod_attach, name, namespace,
                  container=container, stdin=True, stdout=stdout, stderr=True, tty=False,
                  binary=True, _preload_content=False)


class KubernetesBackend:
    """Runs each request in a fresh Pod of the sandbox namespace (docs/scale-out.md).

    ``core`` is a ``kubernetes.client.CoreV1Api`` (by default from the in-cluster
    configuration, else the local kubeconfig); ``attach`` opens an attach WebSocket (a
    seam for the one unit test of the run flow).
    """

    name = "kubernetes"

    def __init__(self, settings: KubernetesSettings, *, core: Any = None,
                 attach: Attach | None = None) -> None:
        self.settings = settings
        self._core = core if core is not None else _core_api()
        self._attach = attach or _default_attach
        self._sessions: dict[str, KubernetesSession] = {}
        self._lock = threading.Lock()

    @property
    def image(self) -> str:
        """The run manifest's "image": the configured sandbox image reference."""
        return self.settings.image

    def run(self, request: SandboxRequest) -> SandboxOutcome:
        return self.start(request).collect(request)

    def start(self, request: SandboxRequest) -> KubernetesSession:
        """Create the Pod, stage its inputs, attach, say "go": a live session."""
        payload = stage_archive(request, self.settings.stage_mb * 1024 * 1024)
        manifest = pod_manifest(request, self.settings)
        name, ns = manifest["metadata"]["name"], self.settings.namespace
        started = time.monotonic()
        try:
            self._core.create_namespaced_pod(ns, manifest)
            self._stage(name, payload, started)
            self._await_running(name, RUNNER_CONTAINER, started, init=False)
            ws = self._attach(self._core, name, ns, RUNNER_CONTAINER, stdout=True)
            ws.write_stdin(GO)
        except BaseException as exc:
            self._delete(name)
            if isinstance(exc, Exception) and not isinstance(exc, SandboxError):
                # An API or stream failure is the platform's: the job is retried.
                raise SandboxError(f"the Kubernetes API failed to start job "
                                   f"{request.job_id}: {exc}") from exc
            raise
        session = KubernetesSession(self, request, name, ws, time.monotonic())
        with self._lock:
            self._sessions[request.job_id] = session
        return session

    def kill(self, job_id: str) -> None:
        """Cancel a running job (from any thread): its Pod is deleted."""
        with self._lock:
            session = self._sessions.get(job_id)
        if session is not None:
            session.kill()

    def _stage(self, name: str, payload: bytes, started: float) -> None:
        self._await_running(name, STAGE_CONTAINER, started, init=True)
        ws = self._attach(self._core, name, self.settings.namespace, STAGE_CONTAINER,
                          stdout=False)
        try:
            for at in range(0, len(payload), 1 << 20):
                ws.write_stdin(payload[at:at + (1 << 20)])
        finally:
            ws.close()

    def _await_running(self, name: str, container: str, started: float, *,
                       init: bool) -> None:
        """Until ``container`` runs; a Pod that failed or took past the allowance is an
        infrastructure error (the job is retried elsewhere)."""
        while time.monotonic() - started < self.settings.start_allowance_s:
            pod = self._core.read_namespaced_pod(name, self.settings.namespace)
            statuses = (pod.status.init_container_statuses if init
                        else pod.status.container_statuses) or []
            state = next((s.state for s in statuses if s.name == container), None)
            if state is not None and state.running is not None:
                return
            if pod.status.phase in ("Failed", "Succeeded") or (
                    state is not None and state.terminated is not None):
                raise SandboxError(f"sandbox Pod {name} ended before its {container} "
                                   f"container ran ({pod.status.reason or pod.status.phase})")
            time.sleep(_POLL_S)
        raise SandboxError(f"sandbox Pod {name}'s {container} container did not start within "
                           f"{self.settings.start_allowance_s} s; is the RuntimeClass "
                           f"{self.settings.runtime_class!r} installed on the nodes?")

    def _delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._core.delete_namespaced_pod(name, self.settings.namespace,
                                             grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                log.warning("could not delete sandbox Pod %s: %s", name, exc)

    def _forget(self, job_id: str, session: KubernetesSession) -> None:
        with self._lock:
            if self._sessions.get(job_id) is session:
                del self._sessions[job_id]

    def _termination(self, name: str) -> tuple[int | None, bool | None]:
        """The runner's exit code and whether it was OOM-killed, once the kubelet says."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pod = self._core.read_namespaced_pod(name, self.settings.namespace)
            for status in pod.status.container_statuses or []:
                term = status.state.terminated if status.state else None
                if status.name == RUNNER_CONTAINER and term is not None:
                    return int(term.exit_code), term.reason == "OOMKilled"
            time.sleep(_POLL_S)
        return None, None


def _core_api() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.CoreV1Api()


class KubernetesSession(SessionEnd):
    """A running job Pod with live pipes (``SandboxSession``). Both are real pipes, since
    the lock-step feeder writes and reads file descriptors (``execution/feeder.py``): a
    forwarding thread sends what is written to ``stdin`` over the attach stream and closes
    its stdin channel at EOF (the v5 protocol; older servers close it with the stream); a
    pump thread copies the stream's stdout into ``stdout`` and its stderr into the
    ``log_kb`` head+tail cap; a watchdog deletes the Pod at the wall clock or on
    :meth:`kill`, and records the outcome once the stream has ended."""

    def __init__(self, backend: KubernetesBackend, request: SandboxRequest, name: str,
                 ws: Any, started: float) -> None:
        read_fd, self._out_fd = os.pipe()
        self._in_fd, write_fd = os.pipe()
        self.stdin = cast(BinaryIO, os.fdopen(write_fd, "wb", buffering=0))
        self.stdout = cast(BinaryIO, os.fdopen(read_fd, "rb"))
        self.started = started
        self.pod_name = name
        self._what = f"sandbox Pod {name}"
        self._backend, self._request, self._ws = backend, request, ws
        self._deadline = started + request.limits.timeout_s
        self._err = HeadTailBuffer(request.limits.log_kb * 1024)
        self._first_stderr: float | None = None
        self._cancelled = threading.Event()
        self._ended = threading.Event()
        self._outcome: SandboxOutcome | None = None
        self._done = threading.Event()
        threading.Thread(target=self._forward, daemon=True, name=f"sandbox-stdin-{name}").start()
        threading.Thread(target=self._pump, daemon=True, name=f"sandbox-attach-{name}").start()
        threading.Thread(target=self._watch, daemon=True, name=f"sandbox-watch-{name}").start()

    @property
    def first_stderr_at(self) -> float | None:
        return self._first_stderr

    def kill(self) -> None:
        self._cancelled.set()

    def _forward(self) -> None:
        try:
            while chunk := os.read(self._in_fd, 1 << 16):
                self._ws.write_stdin(chunk)
            self._ws.close_channel(0)
        except Exception:  # the stream is gone: the run is over, nothing more to send
            pass
        finally:
            os.close(self._in_fd)

    def _pump(self) -> None:
        to_stdout = True
        try:
            while self._ws.is_open():
                self._ws.update(timeout=_POLL_S)
                err = self._ws.read_stderr() if self._ws.peek_stderr() else b""
                if err:
                    self._first_stderr = self._first_stderr or time.monotonic()
                    self._err.feed(err)
                out = self._ws.read_stdout() if self._ws.peek_stdout() else b""
                if out and to_stdout:
                    try:
                        view = memoryview(out)
                        while view:
                            view = view[os.write(self._out_fd, view):]
                    except OSError:  # the caller closed stdout: keep draining stderr
                        to_stdout = False
        except Exception:  # the stream broke: the Pod is gone or the API went away
            log.warning("attach stream of %s ended abnormally", self.pod_name, exc_info=True)
        finally:
            os.close(self._out_fd)
            self._ended.set()

    def _watch(self) -> None:
        backend, timed_out = self._backend, False
        exit_code: int | None = None
        oom: bool | None = None
        try:
            while not self._ended.wait(_POLL_S):
                if self._cancelled.is_set():
                    break
                if time.monotonic() >= self._deadline:
                    timed_out = True
                    break
            if self._ended.is_set() and not self._cancelled.is_set():
                exit_code, oom = backend._termination(self.pod_name)
        except Exception:
            log.exception("the Kubernetes API failed while watching %s", self.pod_name)
        finally:
            backend._delete(self.pod_name)
            with contextlib.suppress(Exception):
                self._ws.close()
            self._ended.wait(5)
            backend._forget(self._request.job_id, self)
            self._outcome = self.ended(exit_code=exit_code, timed_out=timed_out,
                                       cancelled=self._cancelled.is_set(), oom=oom)
            self._done.set()
