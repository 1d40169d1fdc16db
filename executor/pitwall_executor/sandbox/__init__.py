"""Sandbox backends (docs/architecture.md §4, §5): run untrusted strategy code with limits."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from pitwall.errors import SandboxError
from pitwall_executor.sandbox import orphans
from pitwall_executor.sandbox.base import (
    PYTHON,
    Mount,
    SandboxBackend,
    SandboxOutcome,
    SandboxRequest,
    runner_request,
)
from pitwall_executor.sandbox.orphans import ReapReport

__all__ = ["PYTHON", "Mount", "ReapReport", "SandboxBackend", "SandboxOutcome",
           "SandboxRequest", "make_backend", "reap_orphans", "runner_request"]

if TYPE_CHECKING:
    from pitwall_executor.config import Config

log = logging.getLogger(__name__)


def _gvisor_state(config: Config) -> Path:
    return config.data_dir / "sandbox"


def _pool_root(config: Config) -> Path:
    return config.data_dir / "sandbox-pool"


def make_backend(config: Config) -> SandboxBackend:
    """The sandbox backend the configuration names."""
    if config.sandbox == "gvisor":
        from pitwall_executor.sandbox.checkpoint import SnapshotStore
        from pitwall_executor.sandbox.gvisor import GVisorBackend

        runsc = shutil.which(config.runsc) or config.runsc
        gvisor = GVisorBackend(_gvisor_state(config), runsc=runsc)
        # Cold jobs and pool refills restore a saved warm runner instead of booting
        # (docs/architecture.md §5); the backend itself knows nothing of checkpoints.
        snapshots = SnapshotStore.attach(gvisor)
        if config.pool_size == 0:
            return gvisor
        from pitwall_executor.sandbox.pool import PooledBackend, WarmPool

        pool = WarmPool(gvisor, config.pool_size, config.limits,
                        _pool_root(config), snapshots=snapshots)
        return PooledBackend(gvisor, pool)
    if config.sandbox == "docker":
        from pitwall_executor.sandbox.docker import DockerBackend

        return DockerBackend(config.data_dir / "sandbox-docker")
    if config.sandbox == "local":
        from pitwall_executor.sandbox.unsandboxed import LocalBackend

        # Reaching here means the operator named the unsandboxed backend explicitly.
        return LocalBackend(allow_unsandboxed=True)
    if config.sandbox == "kubernetes":
        # One Pod per job under the gVisor RuntimeClass (docs/scale-out.md).
        from pitwall_executor.sandbox.kubernetes import KubernetesBackend, settings_of

        return KubernetesBackend(settings_of(config))
    raise SandboxError(f"sandbox {config.sandbox!r} is not available yet; use 'gvisor' or 'docker'")


def reap_orphans(config: Config) -> ReapReport:
    """Destroy what dead worker processes of this host left under ``config``; what went.

    Their sandboxes still running or half torn down (gVisor: processes, runsc state,
    cgroups, bundle dirs; Docker, with ``sandbox = "docker"``: containers labelled with
    this host), their warm-pool and checkpoint-build dirs, and the job work dirs they
    marked (``<data_dir>/jobs/<job>/attempt-<n>``, the staged bars included). A live
    process's things, another host's, and anything unmarked are never touched
    (:mod:`.orphans`). A sandbox's own supervisor normally destroys it within seconds of
    its worker's death (:mod:`.supervisor`); this collects the rest.

    Safe to call as often as every recovery pass, from any number of processes of the
    host at once (every step is idempotent). A pass that finds nothing costs a few
    directory listings under ``data_dir`` and ``/sys/fs/cgroup``, one ``/proc/<pid>/stat``
    read per sandbox, pool or work dir found, and with Docker one container listing
    from the engine; runsc, the engine's removal and the file deletions run only for
    orphans. A Docker engine that cannot be reached is logged and skipped.
    """
    runsc = shutil.which(config.runsc) or config.runsc
    state = _gvisor_state(config)
    report = (orphans.reap_runsc(state, runsc) + orphans.reap_cgroups()
              + orphans.reap_pools(_pool_root(config))
              + orphans.reap_builds(state / "snapshots")
              + orphans.reap_work_dirs(config.jobs_dir))
    if config.sandbox == "docker":
        import docker
        import docker.errors

        try:
            client = docker.from_env()
            try:
                report += orphans.reap_containers(client)
            finally:
                client.close()
        except docker.errors.DockerException as exc:
            log.warning("orphaned containers not checked: the Docker engine failed (%s)", exc)
    return report
