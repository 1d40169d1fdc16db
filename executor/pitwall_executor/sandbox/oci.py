"""The OCI bundle of a gVisor job: the sandbox image's root, read-only, and a locked-down
config.

The root is the sandbox image (``sandbox/rootfs.py``): the interpreter at ``/opt/python``,
its standard library, the quant libraries at ``/opt/pitwall/site-packages``, the SDK at
``/opt/pitwall/sdk``, their compiled bytecode at ``/opt/pitwall/pycache``, the shared
libraries they link to under ``/usr/lib``, and the skeleton below (mount points, the
merged-/usr symlinks of Debian, ``/etc/passwd``); never a host directory. On top of it a
job gets only ``/proc``, a tiny ``/dev``, the size-capped tmpfs at ``/scratch`` (the only
writable place) and its own read-only mounts under ``/job``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitwall.errors import SandboxError
from pitwall.models import Limits
from pitwall_executor.sandbox.base import FIXED_ENV, PYTHON, SCRATCH, Mount

SANDBOX_UID = 65534  # nobody
PY_PREFIX = "/opt/python"
SITE_PACKAGES = "/opt/pitwall/site-packages"
SDK = "/opt/pitwall/sdk"
#: The compiled bytecode of all of the above (``PYTHONPYCACHEPREFIX``; sandbox/pycache.py).
PYCACHE = "/opt/pitwall/pycache"
_PY_VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"
_SKELETON_DIRS = (
    "usr/bin", "usr/lib", "usr/lib64", "proc", "dev", "etc", "tmp", "job/bundle",
    # job/channel: an event job's lane dir (pitwall.lane); empty and read-only otherwise.
    # Every mount point is in the image: runsc would otherwise create it in the image.
    "job/channel", "job/input", SCRATCH.lstrip("/"), PY_PREFIX.lstrip("/"),
    SITE_PACKAGES.lstrip("/"), SDK.lstrip("/"), PYCACHE.lstrip("/"),
)
_SYMLINKS = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64",
             # What ``docker run IMAGE python ...`` finds on PATH.
             "usr/bin/python": f"{PY_PREFIX}/bin/{_PY_VERSION}",
             "usr/bin/python3": f"{PY_PREFIX}/bin/{_PY_VERSION}"}
# Host paths a job must never see, whatever a caller passes as a mount source.
_FORBIDDEN_SOURCES = tuple(
    Path(p) for p in ("/root", "/etc", "/proc", "/sys", "/dev", "/run", "/var/run", "/boot")
)
_NO_CAPS: dict[str, list[str]] = {
    k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")
}


@dataclass(frozen=True)
class PythonLayout:
    """Host paths the sandbox image is built from (``sandbox/contents.py``)."""

    prefix: Path  # sys.base_prefix: bin/python3.X, lib/python3.X, lib/libpython
    site_packages: Path  # the venv's: polars, pyarrow, numpy
    sdk: Path  # the directory holding the ``pitwall`` package

    @classmethod
    def of_this_interpreter(cls) -> PythonLayout:
        import pitwall

        site = next(
            (Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()),
            None,
        )
        if site is None:
            raise SandboxError("cannot find this interpreter's site-packages to build the "
                               "sandbox image from; run the worker from the project's .venv")
        return cls(Path(sys.base_prefix), site, Path(pitwall.__file__).resolve().parent.parent)


def skeleton(root: Path) -> Path:
    """Write the image's skeleton under ``root`` (created, or completed): mount points,
    symlinks and the sandbox user's ``/etc/passwd``; return ``root``."""
    for d in _SKELETON_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    for name, target in _SYMLINKS.items():
        link = root / name
        if not link.is_symlink():
            link.symlink_to(target)
    passwd = f"nobody:x:{SANDBOX_UID}:{SANDBOX_UID}::{SCRATCH}:/bin/false\n"
    (root / "etc/passwd").write_text(passwd)
    (root / "etc/group").write_text(f"nogroup:x:{SANDBOX_UID}:\n")
    # runsc mounts a writable tmpfs over an empty /tmp that is not a mount (gVisor's
    # Docker compatibility): a file in it keeps /tmp the read-only root's.
    (root / "tmp/README").write_text(f"Read-only: write to {SCRATCH}, the only writable place.\n")
    os.chmod(root, 0o755)
    return root


def check_source(source: Path) -> Path:
    """Resolve a mount source and refuse the host's secrets and control sockets."""
    real = source.resolve()
    if not real.exists():
        raise SandboxError(f"mount source {source} does not exist")
    if real == Path("/") or any(real == p or p in real.parents for p in _FORBIDDEN_SOURCES):
        raise SandboxError(f"mount source {source} is a host system path; copy what the job needs")
    if real.is_socket():
        raise SandboxError(f"mount source {source} is a socket; sockets are never mounted")
    return real


def _bind(source: Path, target: str, *, readonly: bool = True) -> dict[str, Any]:
    mode = "ro" if readonly else "rw"
    return {"destination": target, "source": str(source), "type": "bind",
            "options": ["rbind", mode, "nosuid", "nodev"]}


def mounts(job_mounts: tuple[Mount, ...], limits: Limits) -> list[dict[str, Any]]:
    """What a job sees besides the image's root: ``/proc``, a tiny ``/dev``, the scratch
    tmpfs and its own mounts (read-only unless a mount says otherwise)."""
    scratch_opts = ["nosuid", "nodev", f"size={limits.scratch_mb}m", "mode=1777"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "noexec", "mode=755", "size=64k"]},
        {"destination": SCRATCH, "type": "tmpfs", "source": "tmpfs", "options": scratch_opts},
        *(_bind(check_source(m.source), m.target, readonly=m.readonly) for m in job_mounts),
    ]


def environment(extra: Mapping[str, str]) -> list[str]:
    """The whole environment of the sandboxed process: nothing leaks from the host."""
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": SCRATCH,
        "TMPDIR": SCRATCH,
        "PYTHONPATH": f"{SDK}:{SITE_PACKAGES}",
        "PYTHONPYCACHEPREFIX": PYCACHE,
        # The pyenv interpreter finds libpython through an absolute RUNPATH on the host.
        "LD_LIBRARY_PATH": f"{PY_PREFIX}/lib",
        **extra,
        **FIXED_ENV,
    }
    return [f"{k}={v}" for k, v in sorted(env.items())]


def interpreter_argv(argv: tuple[str, ...]) -> list[str]:
    """Replace the symbolic ``PYTHON`` by the mounted interpreter's path."""
    head = f"{PY_PREFIX}/bin/{_PY_VERSION}" if argv[0] == PYTHON else argv[0]
    return [head, *argv[1:]]


def rlimits(limits: Limits) -> list[dict[str, Any]]:
    # gVisor enforces these inside the sandbox: fork fails with EAGAIN past NPROC
    # (graceful), before the host pids cgroup (the backstop) would kill the sandbox.
    scratch = limits.scratch_mb * 1024 * 1024
    values = {"RLIMIT_NOFILE": 1024, "RLIMIT_NPROC": limits.pids, "RLIMIT_FSIZE": scratch,
              "RLIMIT_CORE": 0}
    return [{"type": k, "hard": v, "soft": v} for k, v in values.items()]


#: CPU weight of a sandbox's cgroup (the kernel default is 1024). Backtests are batch work:
#: on a shared host they yield to the API and the database when those wake up. A worker's
#: nice value does not reach across cgroups, so the weight has to be set on the sandbox's.
SANDBOX_CPU_SHARES = 128


def resources(limits: Limits) -> dict[str, Any]:
    period = 100_000
    return {
        "memory": {"limit": limits.memory_mb * 1024 * 1024},
        # A backstop only: each sandbox process costs a few host tasks (ptrace: ~5 stub
        # threads) on top of ~50 for the sentry and gofer (measured), and hitting
        # pids.max makes the sentry panic. The graceful limit is RLIMIT_NPROC inside.
        "pids": {"limit": 64 + 8 * limits.pids},
        "cpu": {"quota": max(1000, int(limits.cpus * period)), "period": period,
                "shares": SANDBOX_CPU_SHARES},
    }


def config(*, rootfs: Path, argv: list[str], env: list[str], cwd: str,
           mount_list: list[dict[str, Any]], limits: Limits, cgroup: str) -> dict[str, Any]:
    """The OCI ``config.json`` of one job."""
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": SANDBOX_UID, "gid": SANDBOX_UID, "additionalGids": []},
            "args": argv,
            "env": env,
            "cwd": cwd,
            "capabilities": _NO_CAPS,
            "rlimits": rlimits(limits),
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "sandbox",
        "mounts": mount_list,
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "cgroupsPath": cgroup,
            "resources": resources(limits),
        },
    }
