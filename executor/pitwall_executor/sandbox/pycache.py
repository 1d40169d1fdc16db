"""Compiled bytecode for the sandbox's read-only Python, built once on the host.

The sandbox mounts the interpreter, the project's site-packages and the SDK read-only
and sets ``PYTHONDONTWRITEBYTECODE``: a module without a valid ``.pyc`` next to it is
compiled from source on *every* import, in every job. An installer that does not compile
bytecode (uv's default) leaves the whole of numpy, polars and pyarrow like that, and in
gVisor the compiling costs a cold job more than the sandbox's own boot
(docs/benchmarks.md, "Bytecode").

So the backend builds a private bytecode tree (``PYTHONPYCACHEPREFIX``): for every module
a job may import (the standard library, the SDK, and the distributions the sandbox image
ships, ``distributions.QUANT_LIBRARIES`` and their dependencies), the ``.pyc`` is compiled for the
path the module has *inside* the sandbox, stored at the place the interpreter looks for
it under the prefix, and the tree is mounted read-only at :data:`PYCACHE`. The host's
venv is never written. The ``.pyc`` files are timestamp-checked (source mtime and size,
as a normal ``__pycache__``): a source edited after the build is recompiled in memory,
never run stale; the next backend start refreshes the tree. Each file is written
atomically (the interpreter's own writer), so workers sharing a state dir may build it
at the same time.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import py_compile
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pitwall_executor.sandbox import oci
from pitwall_executor.sandbox.distributions import distributions

log = logging.getLogger(__name__)

#: Where the tree is mounted inside the sandbox (``PYTHONPYCACHEPREFIX``).
PYCACHE = oci.PYCACHE
_TAG = sys.implementation.cache_tag  # cpython-311
_SKIP_DIRS = {"__pycache__", "tests", "test", "idlelib", "tkinter", "turtledemo", "ensurepip",
              "lib2to3", "site-packages"}


@dataclass(frozen=True)
class BuildStats:
    """What :func:`build` did: sources seen, compiled now, failed to compile, seconds."""

    sources: int
    compiled: int
    failed: int
    seconds: float


def _sources(root: Path) -> Iterator[Path]:
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".dist-info")]
        for name in names:
            if name.endswith(".py"):
                yield Path(dirpath) / name


def _site_roots(site: Path) -> set[Path]:
    """Top-level files and package dirs in ``site`` of the sandbox's distributions."""
    dists, _missing = distributions()
    roots: set[Path] = set()
    for dist in dists:
        for f in dist.files or []:
            parts = Path(str(f)).parts
            if not parts or parts[0].endswith((".dist-info", ".data")) or parts[0] == "..":
                continue
            top = site / parts[0]
            if top.suffix == ".py" or top.is_dir():
                roots.add(top)
    return roots


def trees(layout: oci.PythonLayout) -> list[tuple[Path, str]]:
    """(host root, path of that root inside the sandbox) of every source to compile."""
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = layout.site_packages.resolve()
    found = [(layout.prefix / "lib" / ver, f"{oci.PY_PREFIX}/lib/{ver}"),
             (layout.sdk / "pitwall", f"{oci.SDK}/pitwall")]
    found += sorted((root, f"{oci.SITE_PACKAGES}/{root.relative_to(site)}")
                    for root in _site_roots(site))
    return found


def cache_path(prefix: Path, inside: str) -> Path:
    """Where the interpreter looks for the ``.pyc`` of source ``inside`` under ``prefix``."""
    head, name = inside.rsplit("/", 1)
    return prefix / head.lstrip("/") / f"{name[:-3]}.{_TAG}.pyc"


def _fresh(source: Path, cfile: Path) -> bool:
    """True when ``cfile`` is a timestamp pyc of this interpreter matching ``source``."""
    try:
        with cfile.open("rb") as fh:
            head = fh.read(16)
        st = source.stat()
    except OSError:
        return False
    return (len(head) == 16 and head[:4] == importlib.util.MAGIC_NUMBER
            and int.from_bytes(head[4:8], "little") == 0
            and int.from_bytes(head[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(head[12:16], "little") == st.st_size & 0xFFFFFFFF)


def default_dir(layout: oci.PythonLayout) -> Path:
    """The per-user tree of this interpreter and venv, shared by every backend using them
    (a worker restart or a test session then finds it built: the first build compiles
    thousands of modules, a check of a fresh tree only reads their headers;
    docs/benchmarks.md, "Bytecode")."""
    key = hashlib.sha256("\0".join(map(str, (layout.prefix.resolve(),
                                               layout.site_packages.resolve(),
                                               layout.sdk.resolve(), _TAG))).encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "pitwall" / "sandbox-bytecode" / key.hexdigest()[:16]


def build(layout: oci.PythonLayout, prefix: Path) -> BuildStats:
    """Compile what is missing or stale under ``prefix``; idempotent and cheap when fresh."""
    started = time.monotonic()
    prefix.mkdir(parents=True, exist_ok=True)
    seen = compiled = failed = 0
    for root, inside_root in trees(layout):
        sources = [root] if root.is_file() else _sources(root)
        for source in sources:
            seen += 1
            rel = "" if source == root else "/" + source.relative_to(root).as_posix()
            inside = inside_root + rel
            cfile = cache_path(prefix, inside)
            if _fresh(source, cfile):
                continue
            try:
                py_compile.compile(str(source), cfile=str(cfile), dfile=inside, doraise=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)
                compiled += 1
            except (py_compile.PyCompileError, OSError, ValueError):
                failed += 1  # a module that does not compile fails the same way in a job
    for dirpath, _dirs, _files in os.walk(prefix):  # readable by the sandbox's uid
        with contextlib.suppress(OSError):  # another user's tree: theirs to keep readable
            os.chmod(dirpath, 0o755)
    stats = BuildStats(seen, compiled, failed, time.monotonic() - started)
    if compiled:
        log.info("sandbox bytecode: compiled %d of %d modules in %.1f s (%d failed)",
                 compiled, seen, stats.seconds, failed)
    return stats
