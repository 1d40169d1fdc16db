"""What a strategy can see of the file system is the sandbox image's manifest, and only it.

A probe walks ``/`` from inside a real sandbox (gVisor, and Docker on runsc), hashing every
file, and the listing is compared with the manifest the image build wrote
(``sandbox/rootfs.py``): the same paths, types, sizes, sha256s and link targets; nothing
of the host (its ``/usr``, the interpreter's test suite, the development environment's
packages) beside it. Only the kernel's file systems (``/proc``, ``/sys``, ``/dev``) and
the job's own mounts (``/job``, ``/scratch``) are left out of the walk.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_helpers import FAST, Backend

from pitwall_executor.execution.attempt import sandbox_record
from pitwall_executor.sandbox.base import PYTHON, SandboxRequest
from pitwall_executor.sandbox.checkpoint import SnapshotStore
from pitwall_executor.sandbox.docker import DockerBackend
from pitwall_executor.sandbox.gvisor import GVisorBackend
from pitwall_executor.sandbox.image import ROOTFS_LABEL
from pitwall_executor.sandbox.oci import PythonLayout
from pitwall_executor.sandbox.rootfs import Rootfs

pytestmark = pytest.mark.sandbox

#: Left out of the walk: the kernel's file systems and the job's own mounts.
SKIPPED = ("/proc", "/sys", "/dev", "/job", "/scratch")
#: What the Docker engine adds to every container (name resolution, ``/.dockerenv``).
ENGINE_FILES = {"/.dockerenv", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/etc/mtab"}
WALK = """
import hashlib, json, os, stat, sys
skipped = set(sys.argv[1:])
seen = {}
def visit(path):
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.path in skipped:
            continue
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            seen[entry.path] = {"type": "symlink", "target": os.readlink(entry.path)}
        elif stat.S_ISDIR(st.st_mode):
            seen[entry.path] = {"type": "dir", "mode": f"{st.st_mode & 0o7777:04o}"}
            visit(entry.path)
        else:
            h = hashlib.sha256()
            try:
                with open(entry.path, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
                sha = h.hexdigest()
            except OSError as exc:
                sha = f"unreadable: {exc.strerror}"
            seen[entry.path] = {"type": "file", "size": st.st_size, "sha256": sha,
                                "mode": f"{st.st_mode & 0o7777:04o}"}
visit("/")
sys.stdout.write(json.dumps(seen))
"""
WALK_LIMITS = FAST.model_copy(update={"timeout_s": 300, "memory_mb": 512, "output_mb": 32})


def image_of(sandbox: Backend) -> Rootfs:
    rootfs = sandbox.rootfs
    assert rootfs is not None, "the Docker backend runs on the built image unless told not to"
    return rootfs


@pytest.fixture(scope="module")
def walks() -> dict[str, dict[str, dict[str, Any]]]:
    return {}


@pytest.fixture
def seen(sandbox: Backend, walks: dict[str, dict[str, dict[str, Any]]],
         ) -> dict[str, dict[str, Any]]:
    """Everything a strategy can see, walked once per backend of this module."""
    if sandbox.name not in walks:
        out = sandbox.run(SandboxRequest("walk", (PYTHON, "-S", "-c", WALK, *SKIPPED),
                                         limits=WALK_LIMITS))
        assert out.exit_code == 0 and not out.stdout_truncated, out.reason
        walks[sandbox.name] = json.loads(out.stdout)
    return walks[sandbox.name]


def extras(sandbox: Backend, seen: dict[str, dict[str, Any]]) -> Iterator[str]:
    """Paths seen that the image does not hold, bar the engine's own files."""
    manifest = image_of(sandbox).manifest()
    allowed = ENGINE_FILES if sandbox.name == "docker" else set()
    return (p for p in seen if p not in manifest and p not in allowed)


def test_a_strategy_sees_exactly_the_image(sandbox: Backend,
                                           seen: dict[str, dict[str, Any]]) -> None:
    manifest = image_of(sandbox).manifest()
    assert sorted(extras(sandbox, seen)) == []
    # The image's mount points (empty directories) are under the walk's skipped paths.
    walked = {p for p in manifest if not p.startswith(tuple(f"{s}/" for s in SKIPPED))
              and p not in SKIPPED}
    assert sorted(walked - set(seen)) == []
    differing = {p: (seen[p], manifest[p]) for p in walked if seen[p] != manifest[p]}
    assert differing == {}
    assert len(manifest) > 5000  # the interpreter, its stdlib and the quant libraries


def test_the_hosts_software_is_not_there(sandbox: Backend,
                                         seen: dict[str, dict[str, Any]]) -> None:
    """The issue's findings: the host's ``/usr``, the interpreter's test suite and the
    development environment's packages were all visible."""
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = next(p for p in sys.path if p.endswith("site-packages"))
    # Each is on this host, so its absence inside proves the isolation, not the host.
    host_only = {
        "/usr/bin/gcc": Path("/usr/bin/gcc"), "/usr/bin/perl": Path("/usr/bin/perl"),
        "/usr/bin/sh": Path("/usr/bin/sh"), "/usr/bin/apt": Path("/usr/bin/apt"),
        "/usr/bin/runsc": Path("/usr/bin/runsc"), "/usr/include": Path("/usr/include"),
        **{f"/usr/lib/{d}": Path("/usr/lib") / d for d in ("jvm", "google-cloud-sdk", "gcc")},
        f"/opt/python/lib/{ver}/test": Path(sys.base_prefix) / "lib" / ver / "test",
        f"/opt/python/lib/{ver}/site-packages": Path(sys.base_prefix) / "lib" / ver
        / "site-packages",
        **{f"/opt/pitwall/site-packages/{name}": Path(site) / name
           for name in ("schemathesis", "hypothesis", "backtrader", "pytest", "_pytest",
                        "docker", "_editable_impl_pitwall_backtest.pth")},
    }
    assert [h for h in host_only.values() if not h.exists()] == []
    assert sorted(set(host_only) & set(seen)) == []
    assert not any(p.startswith(("/usr/local", "/usr/bin/g", "/root", "/home", "/work"))
                   for p in seen)
    assert not any("/tests/" in p or "/test/" in p for p in seen)
    assert not any("pitwall_executor" in p or "pitwall_server" in p for p in seen)
    # /usr holds the libraries the image links to, the time zones and python links only.
    usr_bin = {p: e for p, e in seen.items() if p.startswith("/usr/bin/")}
    assert usr_bin == {p: {"type": "symlink", "target": f"/opt/python/bin/{ver}"}
                       for p in ("/usr/bin/python", "/usr/bin/python3")}
    assert {p.split("/")[2] for p in seen if p.startswith("/usr/")} == {"bin", "lib", "lib64",
                                                                         "share"}
    assert {p.split("/")[3] for p in seen if p.startswith("/usr/share/")} == {"zoneinfo"}


def test_the_image_holds_what_a_job_runs(sandbox: Backend) -> None:
    """Every quant library, the SDK and the time-zone database load from the image."""
    code = """
import numpy, pandas, polars, pyarrow, scipy.stats, statsmodels.api, sklearn.linear_model, ta
import pydantic, pitwall, pitwall.sandbox.runner, zoneinfo
print(pandas.Timestamp("2024-07-01 14:30", tz="UTC").tz_convert("America/New_York").hour,
      zoneinfo.ZoneInfo("Europe/London").key, pitwall.__file__)
"""
    out = sandbox.run(SandboxRequest("libs", (PYTHON, "-S", "-c", code), limits=FAST))
    assert out.exit_code == 0, out.reason
    assert out.stdout.decode().split() == ["10", "Europe/London",
                                           "/opt/pitwall/sdk/pitwall/__init__.py"]


def test_the_run_manifest_pins_the_images_digest(sandbox: Backend) -> None:
    rootfs = image_of(sandbox)
    data = rootfs.manifest_path.read_bytes()
    assert rootfs.digest == f"sha256:{hashlib.sha256(data).hexdigest()}"
    record = sandbox_record(sandbox)
    if isinstance(sandbox, GVisorBackend):
        assert record == {"backend": "gvisor", "image": rootfs.digest}
    else:
        assert isinstance(sandbox, DockerBackend)
        assert record == {"backend": "docker", "image": sandbox.image_id}
        labels = sandbox.client.images.get(sandbox.image_id).labels
        assert labels[ROOTFS_LABEL] == rootfs.digest  # the same image as gVisor's


def test_a_new_image_gets_its_own_digest_and_checkpoints(
        backend: GVisorBackend, tmp_path: Path) -> None:
    """An edited SDK is a new image (built from the previous one in about a second), and
    a checkpoint of the old image is never restored on it."""
    layout = PythonLayout.of_this_interpreter()
    sdk = tmp_path / "sdk"
    shutil.copytree(layout.sdk / "pitwall", sdk / "pitwall",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with (sdk / "pitwall" / "errors.py").open("a") as fh:
        fh.write("\nEDITED = 'yes'\n")
    edited = GVisorBackend(tmp_path / "state", layout=PythonLayout(
        layout.prefix, layout.site_packages, sdk))
    assert edited.image != backend.image
    assert (edited.rootfs.manifest()["/opt/pitwall/sdk/pitwall/errors.py"]
            != backend.rootfs.manifest()["/opt/pitwall/sdk/pitwall/errors.py"])
    assert SnapshotStore(edited, tmp_path / "a").key(FAST) != SnapshotStore(
        backend, tmp_path / "b").key(FAST)
    out = edited.run(SandboxRequest("edited", (PYTHON, "-S", "-c",
                                               "import pitwall.errors as e; print(e.EDITED)"),
                                    limits=FAST))
    assert out.exit_code == 0 and out.stdout == b"yes\n", out.reason
