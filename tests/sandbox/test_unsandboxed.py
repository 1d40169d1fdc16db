"""The unsandboxed local backend: refuses unless asked, runs the same requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitwall.errors import SandboxError
from pitwall.models import Limits
from pitwall_executor.sandbox.base import PYTHON, Mount, SandboxBackend, SandboxRequest
from pitwall_executor.sandbox.unsandboxed import LocalBackend


def test_refuses_without_explicit_opt_in() -> None:
    with pytest.raises(SandboxError, match="allow_unsandboxed=True"):
        LocalBackend()
    with pytest.raises(SandboxError):
        LocalBackend(allow_unsandboxed="yes")  # type: ignore[arg-type]


def test_runs_with_mounts_caps_and_timeout(tmp_path: Path) -> None:
    backend = LocalBackend(allow_unsandboxed=True)
    assert isinstance(backend, SandboxBackend)
    src = tmp_path / "in"
    src.mkdir()
    (src / "f.txt").write_text("hello")
    req = SandboxRequest("j", (PYTHON, "-c", "import sys; print(open(sys.argv[1]).read() * 100)",
                               "/job/input/f.txt"), (Mount(src, "/job/input"),),
                         limits=Limits(output_mb=1, timeout_s=10))
    out = backend.run(req)
    assert out.exit_code == 0 and out.stdout.startswith(b"hellohello")
    slow = SandboxRequest("s", (PYTHON, "-c", "import time; time.sleep(30)"),
                          limits=Limits(timeout_s=0.5))
    out = backend.run(slow)
    assert out.timed_out and out.duration_s < 2


def test_reserved_mount_targets() -> None:
    with pytest.raises(SandboxError, match="reserved"):
        Mount(Path("/tmp"), "/usr")
    with pytest.raises(SandboxError, match="absolute"):
        Mount(Path("/tmp"), "job/../x")
