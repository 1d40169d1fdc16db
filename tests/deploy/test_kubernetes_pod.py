"""The Kubernetes backend's job Pods (docs/scale-out.md, "Kubernetes backend"): valid for
two Kubernetes versions, the OCI policy of every backend, inputs staged and the gate
really working (both scripts run here), and one run/cancel flow against a fake API."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.deploy.schemas import VERSIONS, validate

from pitwall.models import Limits
from pitwall_executor.config import load_config
from pitwall_executor.deploy import load_values
from pitwall_executor.deploy.render import sandbox_settings
from pitwall_executor.sandbox import kubernetes as k8s
from pitwall_executor.sandbox.base import SandboxRequest, runner_request
from pitwall_executor.sandbox.oci import SANDBOX_UID

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "values.example.toml"
SETTINGS = sandbox_settings(load_values(EXAMPLE))
LIMITS = {
    "default": Limits(),
    "small": Limits(timeout_s=5, memory_mb=64, pids=8, cpus=0.25, scratch_mb=1),
    "large": Limits(timeout_s=24 * 3600, memory_mb=64 * 1024, pids=4096, cpus=16,
                    scratch_mb=16 * 1024),
    "fractional": Limits(timeout_s=90.5, cpus=1.5),
}


def _request(tmp: Path, engine: str, limits: Limits) -> SandboxRequest:
    """A runner request over staged dirs as the engines write them (the vectorized one
    with its bars, the event one without: it is fed in lock-step)."""
    job = tmp / f"{engine}-job"
    (job / "bundle").mkdir(parents=True)
    (job / "input").mkdir()
    (job / "bundle" / "strategy.py").write_text("def run(bars): ...\n")
    (job / "input" / "spec.json").write_text(f'{{"engine": "{engine}"}}')
    if engine == "vectorized":
        (job / "input" / "bars.arrow").write_bytes(b"\0" * 4096)
    return runner_request(f"job-{engine}-01", job, limits, env={"PITWALL_RUN": "1"})


@pytest.fixture(params=[(e, n) for e in ("vectorized", "event") for n in LIMITS],
                ids=lambda p: f"{p[0]}-{p[1]}")
def pod(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    engine, name = request.param
    return k8s.pod_manifest(_request(tmp_path, engine, LIMITS[name]), SETTINGS)


@pytest.mark.parametrize("version", VERSIONS)
def test_job_pods_validate(pod: dict[str, Any], version: str) -> None:
    validate(pod, version)


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod["spec"]["initContainers"], *pod["spec"]["containers"]]


def test_job_pods_keep_the_sandbox_policy(pod: dict[str, Any]) -> None:
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["runtimeClassName"] == "gvisor"
    assert spec["restartPolicy"] == "Never"
    assert spec["enableServiceLinks"] is False
    assert not (spec["hostNetwork"] or spec["hostPID"] or spec["hostIPC"])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["metadata"]["namespace"] == "pitwall-sandbox"
    assert pod["metadata"]["labels"][k8s.JOB_LABEL].startswith("job-")
    assert all("hostPath" not in v for v in spec["volumes"])
    for container in _containers(pod):
        ctx = container["securityContext"]
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] == SANDBOX_UID
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False and ctx["privileged"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        assert container["resources"]["requests"] == container["resources"]["limits"]
        assert "envFrom" not in container
        assert {e["name"] for e in container["env"]} >= {"PYTHONHASHSEED", "TZ"}


def test_limits_become_quantities_and_the_deadline(tmp_path: Path) -> None:
    limits = LIMITS["fractional"]
    pod = k8s.pod_manifest(_request(tmp_path, "event", limits), SETTINGS)
    res = pod["spec"]["containers"][0]["resources"]["limits"]
    assert res == {"cpu": "1500m", "memory": "2048Mi",
                   "ephemeral-storage": f"{256 + SETTINGS.stage_mb + k8s.LOG_ALLOWANCE_MB}Mi"}
    assert pod["spec"]["activeDeadlineSeconds"] == 91 + SETTINGS.start_allowance_s
    scratch = next(v for v in pod["spec"]["volumes"] if v["name"] == "scratch")
    assert scratch["emptyDir"]["sizeLimit"] == "256Mi"
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["/job/bundle"] == {"name": "stage", "mountPath": "/job/bundle",
                                     "subPath": "job/bundle", "readOnly": True}
    assert mounts["/job/input"]["readOnly"] is True
    assert not mounts["/scratch"].get("readOnly")


def test_pods_are_named_afresh_and_the_job_id_is_label_safe() -> None:
    request = SandboxRequest(job_id="A/weird id " + "x" * 80, argv=("python", "-c", "1"))
    one, two = (k8s.pod_manifest(request, SETTINGS) for _ in range(2))
    assert one["metadata"]["name"] != two["metadata"]["name"]
    label = one["metadata"]["labels"][k8s.JOB_LABEL]
    assert len(label) <= 63 and " " not in label and "/" not in label
    assert one["metadata"]["annotations"][k8s.JOB_ANNOTATION] == request.job_id
    validate(one, VERSIONS[-1])


def test_the_configuration_names_the_kind(tmp_path: Path) -> None:
    cfg = load_config({"PITWALL_DATA_DIR": str(tmp_path), "PITWALL_SANDBOX": "kubernetes",
                       "PITWALL_KUBERNETES__NAMESPACE": "jobs",
                       "PITWALL_KUBERNETES__STAGE_MB": "64"})
    settings = k8s.settings_of(cfg)
    assert cfg.sandbox == "kubernetes" and settings.namespace == "jobs"
    assert settings.stage_mb == 64


def _script(pod: dict[str, Any], container: int, *, init: bool) -> list[str]:
    """A container's command with this interpreter in place of the image's."""
    key = "initContainers" if init else "containers"
    command = list(pod["spec"][key][container]["command"])
    return [sys.executable, *command[1:]]


def test_the_stage_container_unpacks_what_the_worker_sends(tmp_path: Path) -> None:
    request = _request(tmp_path, "vectorized", Limits())
    pod = k8s.pod_manifest(request, SETTINGS)
    command = _script(pod, 0, init=True)
    out = tmp_path / "stage"
    out.mkdir()
    command[-1] = str(out)
    payload = k8s.stage_archive(request, 1 << 20)
    subprocess.run(command, input=payload, check=True, timeout=30)
    assert (out / "job/input/bars.arrow").read_bytes() == b"\0" * 4096
    assert (out / "job/bundle/strategy.py").read_text().startswith("def run")
    command[-2] = "100"  # a cap below the archive: refused, nothing unpacked
    again = subprocess.run(command, input=payload, capture_output=True, timeout=30,
                           check=False)
    assert again.returncode != 0 and b"exceed the cap" in again.stderr
    with pytest.raises(Exception, match="stage_mb"):
        k8s.stage_archive(request, 1024)


def test_the_gate_waits_for_go_sets_the_rlimits_and_becomes_the_runner(tmp_path: Path) -> None:
    request = SandboxRequest(job_id="gate", argv=(
        "python", "-c", "import resource; print(resource.getrlimit(resource.RLIMIT_NPROC))"),
        limits=Limits(pids=100))
    command = _script(k8s.pod_manifest(request, SETTINGS), 0, init=False)
    command[5] = sys.executable  # the runner argv starts after python -I -S -c GATE
    done = subprocess.run(command, input=k8s.GO, capture_output=True, timeout=30, check=True)
    assert done.stdout.strip() == b"(100, 100)"
    wrong = subprocess.run(command, input=b"x", capture_output=True, timeout=30, check=False)
    assert wrong.returncode == 70 and wrong.stdout == b""


class _FakeWS:
    """The attach WebSocket at the edge: records stdin, serves canned stdout/stderr."""

    def __init__(self, out: bytes, err: bytes, *, hold: bool) -> None:
        self.written = bytearray()
        self._out, self._err, self._hold = out, err, hold
        self._open = True
        self.closed_channels: list[int] = []

    def write_stdin(self, data: bytes) -> None:
        self.written += data

    def is_open(self) -> bool:
        return self._open

    def update(self, timeout: float) -> None:
        if not (self._out or self._err) and not self._hold:
            self._open = False
        time.sleep(0.01)

    def peek_stdout(self) -> bool:
        return bool(self._out)

    def read_stdout(self) -> bytes:
        out, self._out = self._out, b""
        return out

    def peek_stderr(self) -> bool:
        return bool(self._err)

    def read_stderr(self) -> bytes:
        err, self._err = self._err, b""
        return err

    def close_channel(self, channel: int) -> None:
        self.closed_channels.append(channel)

    def close(self) -> None:
        self._open = False


class _FakeCore:
    """``CoreV1Api`` at the edge: the Pod runs as soon as it exists; the runner exits 0
    once its attach stream has ended."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.runner: _FakeWS | None = None

    def create_namespaced_pod(self, namespace: str, body: dict[str, Any]) -> None:
        assert namespace == body["metadata"]["namespace"]
        self.created.append(body)

    def read_namespaced_pod(self, name: str, namespace: str) -> Any:
        running = SimpleNamespace(running=object(), terminated=None)
        ended = SimpleNamespace(running=None, terminated=SimpleNamespace(exit_code=0,
                                                                         reason="Completed"))
        return SimpleNamespace(status=SimpleNamespace(
            phase="Running", reason=None,
            init_container_statuses=[SimpleNamespace(name=k8s.STAGE_CONTAINER, state=running)],
            container_statuses=[SimpleNamespace(
                name=k8s.RUNNER_CONTAINER,
                state=running if self.runner is None or self.runner.is_open() else ended)]))

    def delete_namespaced_pod(self, name: str, namespace: str, **_: Any) -> None:
        self.deleted.append(name)


def test_run_and_cancel_through_the_api(tmp_path: Path) -> None:
    core = _FakeCore()
    sockets: dict[str, _FakeWS] = {}
    hold = threading.Event()

    def attach(_core: Any, name: str, ns: str, container: str, *, stdout: bool) -> _FakeWS:
        ws = _FakeWS(b"RESULT" if stdout else b"", b"log line\n" if stdout else b"",
                     hold=hold.is_set())
        sockets[container] = ws
        if container == k8s.RUNNER_CONTAINER:
            core.runner = ws
        return ws

    backend = k8s.KubernetesBackend(SETTINGS, core=core, attach=attach)
    request = _request(tmp_path, "vectorized", Limits(timeout_s=30))
    outcome = backend.run(request)
    assert outcome.ok and outcome.stdout == b"RESULT" and outcome.stderr == b"log line\n"
    (pod,) = core.created
    validate(pod, VERSIONS[0])
    assert bytes(sockets[k8s.STAGE_CONTAINER].written) == k8s.stage_archive(request, 1 << 30)
    assert bytes(sockets[k8s.RUNNER_CONTAINER].written) == k8s.GO
    for _ in range(100):  # a one-shot run: stdin closed at once (a thread forwards it)
        if sockets[k8s.RUNNER_CONTAINER].closed_channels:
            break
        time.sleep(0.02)
    assert sockets[k8s.RUNNER_CONTAINER].closed_channels == [0]
    assert core.deleted == [pod["metadata"]["name"]]

    core.runner = None
    hold.set()  # the next run never ends by itself: cancel deletes its Pod
    session = backend.start(request)
    session.stdin.write(b"STEP")  # event mode: the feeder's frames reach the stream
    for _ in range(100):
        if bytes(sockets[k8s.RUNNER_CONTAINER].written) == k8s.GO + b"STEP":
            break
        time.sleep(0.02)
    assert bytes(sockets[k8s.RUNNER_CONTAINER].written) == k8s.GO + b"STEP"
    backend.kill(request.job_id)
    cancelled = session.wait(timeout=10)
    assert cancelled.cancelled and not cancelled.ok
    assert core.deleted[-1] == core.created[-1]["metadata"]["name"]
