"""A stand-in for a worker process (``test_containment.py``): runs one runner job in a
sandbox, then prints how it ended as JSON.

    python holder.py <gvisor|restored|pool|docker> <data_dir> <job_dir> <timeout_s>

``gvisor`` boots the sandbox, ``restored`` restores it from a checkpoint (as
``make_backend`` composes it), ``pool`` serves it from a warm-pool slot, ``docker`` runs
it on the Docker engine. The job dir is marked as this process's (``owner.mark``), as
the worker marks an attempt's work dir.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sandbox_helpers import FAST

from pitwall_executor.config import load_config
from pitwall_executor.sandbox import SandboxBackend, make_backend, owner, runner_request
from pitwall_executor.sandbox.docker import DockerBackend
from pitwall_executor.sandbox.gvisor import GVisorBackend
from pitwall_executor.sandbox.pool import PooledBackend


def backend(kind: str, data_dir: Path) -> SandboxBackend:
    if kind == "gvisor":
        return GVisorBackend(data_dir / "sandbox")  # no snapshot store: every job boots
    if kind == "docker":
        return DockerBackend(data_dir / "sandbox-docker")
    config = load_config(environ={}, data_dir=data_dir, sandbox="gvisor",
                         pool_size=1 if kind == "pool" else 0, limits=FAST)
    return make_backend(config)


def main() -> None:
    kind, data_dir, job_dir, timeout = sys.argv[1:]
    owner.mark(Path(job_dir))
    chosen = backend(kind, Path(data_dir))
    if isinstance(chosen, PooledBackend):
        assert chosen.pool.wait_ready(1, timeout=60)
    limits = FAST.model_copy(update={"timeout_s": float(timeout)})
    outcome = chosen.run(runner_request("held", Path(job_dir), limits))
    print(json.dumps({"timed_out": outcome.timed_out, "exit_code": outcome.exit_code,
                      "stderr": outcome.stderr.decode()[-300:]}), flush=True)


if __name__ == "__main__":
    main()
