"""Fixtures for the gVisor sandbox tests: a real runsc, never mocked, never skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitwall_executor.sandbox.gvisor import RUNSC, GVisorBackend


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory) -> GVisorBackend:
    if shutil.which(RUNSC) is None:
        pytest.fail(f"these tests need gVisor: runsc was not found at {RUNSC}; install it "
                    "(apt-get install runsc) — they are never skipped")
    return GVisorBackend(tmp_path_factory.mktemp("gvisor-state"))


def leftovers(backend: GVisorBackend) -> list[str]:
    """Everything a finished run could have left behind on the host."""
    found: list[str] = []
    state = str(backend.runsc_root.parent)
    listing = subprocess.run(["runsc", "--root", str(backend.runsc_root), "list", "-quiet"],
                             capture_output=True, text=True, check=True).stdout.split()
    found += [f"container {c}" for c in listing]
    found += [f"state file {p.name}" for p in backend.runsc_root.iterdir()]
    found += [f"job dir {p.name}" for p in (backend.runsc_root.parent / "jobs").iterdir()]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and proc.name != str(os.getpid()):
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if state in cmd:
                found.append(f"process {proc.name}: {cmd[:120]}")
    found += [f"mount {ln}" for ln in Path("/proc/self/mountinfo").read_text().splitlines()
              if state in ln]
    found += [f"cgroup {p}" for p in Path("/sys/fs/cgroup").glob("*/pitwall-*")]
    return found


@pytest.fixture(autouse=True)
def _nothing_left(backend: GVisorBackend) -> Iterator[None]:
    # Cgroups are host-wide: other test sessions on this machine make (and may leak) their
    # own pitwall-* groups. Only what appeared during this test counts.
    before = set(leftovers(backend))
    yield
    # runsc tears its cgroups down asynchronously after the sandbox exits: allow it 5 s.
    deadline = time.monotonic() + 5.0
    while (left := sorted(set(leftovers(backend)) - before)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []
