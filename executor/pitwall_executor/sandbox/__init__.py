"""Sandbox backends (docs/architecture.md §4, §5): run untrusted strategy code with limits."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from pitwall.errors import SandboxError
from pitwall_executor.sandbox.base import (
    PYTHON,
    Mount,
    SandboxBackend,
    SandboxOutcome,
    SandboxRequest,
    runner_request,
)

__all__ = ["PYTHON", "Mount", "SandboxBackend", "SandboxOutcome", "SandboxRequest",
           "make_backend", "runner_request"]

if TYPE_CHECKING:
    from pitwall_executor.config import Config


def make_backend(config: Config) -> SandboxBackend:
    """The sandbox backend the configuration names."""
    if config.sandbox == "gvisor":
        from pitwall_executor.sandbox.checkpoint import SnapshotStore
        from pitwall_executor.sandbox.gvisor import GVisorBackend

        runsc = shutil.which(config.runsc) or config.runsc
        gvisor = GVisorBackend(config.data_dir / "sandbox", runsc=runsc)
        # Cold jobs and pool refills restore a saved warm runner instead of booting
        # (docs/architecture.md §5); the backend itself knows nothing of checkpoints.
        snapshots = SnapshotStore.attach(gvisor)
        if config.pool_size == 0:
            return gvisor
        from pitwall_executor.sandbox.pool import PooledBackend, WarmPool

        pool = WarmPool(gvisor, config.pool_size, config.limits,
                        config.data_dir / "sandbox-pool", snapshots=snapshots)
        return PooledBackend(gvisor, pool)
    if config.sandbox == "docker":
        from pitwall_executor.sandbox.docker import DockerBackend

        return DockerBackend(config.data_dir / "sandbox-docker")
    if config.sandbox == "local":
        from pitwall_executor.sandbox.unsandboxed import LocalBackend

        # Reaching here means the operator named the unsandboxed backend explicitly.
        return LocalBackend(allow_unsandboxed=True)
    raise SandboxError(f"sandbox {config.sandbox!r} is not available yet; use 'gvisor' or 'docker'")
