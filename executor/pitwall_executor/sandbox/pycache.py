"""Compiled bytecode of the sandbox image, built with it (``sandbox/rootfs.py``).

The image's Python is read-only and the sandbox sets ``PYTHONDONTWRITEBYTECODE``: a module
without a valid ``.pyc`` is compiled from source on *every* import, in every job. An
installer that does not compile bytecode (uv's default) leaves the whole of numpy, polars
and pyarrow like that, and in gVisor the compiling costs a cold job more than the
sandbox's own boot (docs/benchmarks.md, "Bytecode").

So the image carries a bytecode tree (``PYTHONPYCACHEPREFIX``): for every module of the
image (the standard library, the quant libraries, the SDK) the ``.pyc`` is compiled for
the path the module has *inside* the sandbox and stored where the interpreter looks for it
under :data:`PYCACHE`. The ``.pyc`` files are unchecked-hash ones: the image is immutable
(content-addressed, the sandbox's read-only root), so checking them against their source
could only cost time, never catch a stale one. Compiling is most of a first build; a
rebuild (the SDK edited) links the ``.pyc`` of every source the previous image held with
the same content at the same path, and compiles only the rest.
"""

from __future__ import annotations

import json
import os
import py_compile
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from pitwall.errors import SandboxError
from pitwall_executor.sandbox import oci

#: Where the tree is inside the sandbox (``PYTHONPYCACHEPREFIX``).
PYCACHE = oci.PYCACHE
_TAG = sys.implementation.cache_tag  # cpython-311
_CHUNK = 500  # sources per compiling process, at least


@dataclass(frozen=True)
class BuildStats:
    """What :func:`compile_into` did: sources, compiled now, linked from the previous
    image, failed to compile, seconds."""

    sources: int
    compiled: int
    linked: int
    failed: int
    seconds: float


def cache_path(prefix: Path, inside: str) -> Path:
    """Where the interpreter looks for the ``.pyc`` of source ``inside`` under ``prefix``."""
    head, name = inside.rsplit("/", 1)
    return prefix / head.lstrip("/") / f"{name[:-3]}.{_TAG}.pyc"


def pyc_path(inside: str) -> str:
    """The path inside the sandbox of the ``.pyc`` of source ``inside``."""
    return cache_path(Path(PYCACHE), inside).as_posix()


def _compile(root: str, arcs: list[str]) -> list[str]:
    """Compile ``arcs`` (paths inside the image) found under ``root``; the failed ones."""
    failed = []
    for arc in arcs:
        cfile = cache_path(Path(root) / PYCACHE.lstrip("/"), arc)
        try:
            py_compile.compile(f"{root}{arc}", cfile=str(cfile), dfile=arc, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        except (py_compile.PyCompileError, OSError, ValueError):
            failed.append(arc)  # a module that does not compile fails the same way in a job
    return failed


def compile_into(root: Path, sources: Mapping[str, str],
                 reuse: Callable[[str, str], Path | None]) -> BuildStats:
    """Give every source of ``sources`` (path inside the image → its sha256), already
    under ``root``, its ``.pyc`` under ``root``'s :data:`PYCACHE`. ``reuse(arc, sha)``
    names the previous image's ``.pyc`` of the same source, or None: compile it."""
    started = time.monotonic()
    todo: list[str] = []
    linked = 0
    for arc, sha in sorted(sources.items()):
        cfile = cache_path(root / PYCACHE.lstrip("/"), arc)
        old = reuse(arc, sha)
        if old is not None:
            cfile.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(old, cfile)
                linked += 1
                continue
            except OSError:
                pass  # another file system, or gone meanwhile: compile it
        todo.append(arc)
    failed: list[str] = []
    workers = max(1, min(os.cpu_count() or 1, len(todo) // _CHUNK)) if todo else 0
    # Processes of their own (``python -m`` this module), never a fork of a worker's
    # threads nor multiprocessing's re-import of whatever ``__main__`` is.
    procs = [subprocess.Popen([sys.executable, "-m", __name__, str(root)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    for i, proc in enumerate(procs):
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(todo[i::workers]))
        proc.stdin.close()
    for proc in procs:
        assert proc.stdout is not None
        out = proc.stdout.read()
        if proc.wait() != 0:
            raise SandboxError(f"compiling the sandbox image's bytecode failed (exit "
                               f"{proc.returncode}); its error is in the worker's log above")
        failed += json.loads(out)
    return BuildStats(len(sources), len(todo) - len(failed), linked, len(failed),
                      time.monotonic() - started)


if __name__ == "__main__":  # one compiling process of :func:`compile_into`
    print(json.dumps(_compile(sys.argv[1], json.loads(sys.stdin.read()))))
