"""What only the Docker backend has: the engine's own reading of the policy.

The policy's behaviour is proven on both backends by ``test_policy.py`` and
``test_sessions.py``; here, what the engine recorded is read back, so nothing it was
given is silently dropped.
"""

from __future__ import annotations

import pytest
from sandbox_helpers import FAST

from pitwall_executor.sandbox import oci
from pitwall_executor.sandbox.base import PYTHON, SandboxRequest
from pitwall_executor.sandbox.docker import DockerBackend
from pitwall_executor.sandbox.image import ROOTFS_LABEL, docker_image

pytestmark = pytest.mark.docker


def test_engine_accepted_the_policy(docker_backend: DockerBackend) -> None:
    backend = docker_backend
    limits = FAST.model_copy(update={"memory_mb": 300, "pids": 40, "cpus": 0.5})
    request = SandboxRequest("policy", (PYTHON, "-c", "pass"), (), {}, limits)
    options = backend.container_options(request, "pitwall-policy-probe")
    container = backend.client.containers.create(**options)
    try:
        container.reload()
        host = container.attrs["HostConfig"]
        config = container.attrs["Config"]
    finally:
        container.remove(force=True)
    assert host["Runtime"] == "runsc" and host["NetworkMode"] == "none"
    assert host["IpcMode"] == "none" and host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Memory"] == host["MemorySwap"] == 300 << 20
    assert host["PidsLimit"] == 64 + 8 * 40 and host["NanoCpus"] == 500_000_000
    assert host["CpuShares"] == oci.SANDBOX_CPU_SHARES  # batch weight: the API comes first
    assert host["LogConfig"]["Type"] == "none"
    assert host["Tmpfs"] == {"/scratch": "size=8m,mode=1777"}
    ulimits = {u["Name"]: u["Hard"] for u in host["Ulimits"]}
    assert ulimits == {"nofile": 1024, "nproc": 40, "fsize": 8 << 20, "core": 0}
    assert not host.get("Mounts")  # no host path: everything is the sandbox image's
    # stdin is open for event mode and closed by the engine when our end closes it.
    assert config["OpenStdin"] is True and config["StdinOnce"] is True and config["Tty"] is False
    # The gVisor backend's image, imported once per digest (idempotent).
    assert backend.rootfs is not None
    assert docker_image(backend.client, backend.rootfs) == backend.image_id
    image = backend.client.images.get(backend.image_id)
    assert image.labels[ROOTFS_LABEL] == backend.rootfs.digest
