"""Fixtures for the sandbox tests: a real runsc and a real Docker engine (runtime runsc),
never mocked, never skipped."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import docker
import docker.errors
import pytest
from sandbox_helpers import Backend, docker_leftovers, leftovers

from pitwall_executor.sandbox.checkpoint import SnapshotStore
from pitwall_executor.sandbox.docker import DockerBackend
from pitwall_executor.sandbox.gvisor import RUNSC, GVisorBackend


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory) -> GVisorBackend:
    if shutil.which(RUNSC) is None:
        pytest.fail(f"these tests need gVisor: runsc was not found at {RUNSC}; install it "
                    "(apt-get install runsc) — they are never skipped")
    backend = GVisorBackend(tmp_path_factory.mktemp("gvisor-state"))
    SnapshotStore.attach(backend)  # as make_backend composes it: cold jobs are restored
    return backend


@pytest.fixture(autouse=True)
def _nothing_left(backend: GVisorBackend) -> Iterator[None]:
    # Only what appeared during this test counts.
    before = set(leftovers(backend))
    yield
    # runsc tears its cgroups down asynchronously after the sandbox exits: allow it 5 s.
    deadline = time.monotonic() + 5.0
    while (left := sorted(set(leftovers(backend)) - before)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []


@pytest.fixture(scope="session")
def docker_backend(tmp_path_factory: pytest.TempPathFactory) -> DockerBackend:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"these tests need the Docker engine with the runsc runtime ({exc}); "
                    "run `make services` — they are never skipped")
    return DockerBackend(tmp_path_factory.mktemp("docker-state"), client=client)


@pytest.fixture(params=["gvisor", pytest.param("docker", marks=pytest.mark.docker)])
def sandbox(request: pytest.FixtureRequest, backend: GVisorBackend) -> Iterator[Backend]:
    """Each backend in turn: the same policy, proven the same way on both."""
    if request.param == "gvisor":
        yield backend
        return
    engine: DockerBackend = request.getfixturevalue("docker_backend")
    # Other sessions on this engine (another worktree's tests) may run containers of
    # their own: only what appeared during this test counts.
    before = set(docker_leftovers(engine))
    yield engine
    deadline = time.monotonic() + 5.0
    while (left := sorted(set(docker_leftovers(engine)) - before)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []
