"""What the sandbox image holds, read from this host, and the key of what a build reads.

The image (``image.py``; stored by ``rootfs.py``) holds only what a job runs: the
interpreter (``sys.base_prefix``: the binary, ``libpython``, the standard library without
its test suite, IDLE, tkinter and ensurepip), the quant libraries
(``distributions.QUANT_LIBRARIES`` and their dependencies, as installed in this host's
``.venv``, without their own test suites), the SDK (the ``pitwall`` package only), the
shared libraries all of it links to (``ldd``) and the time-zone database; ``rootfs.py``
adds the skeleton of ``oci.py`` and the bytecode (``pycache.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pitwall_executor.sandbox import oci
from pitwall_executor.sandbox.distributions import distributions, image_files

_VER = f"python{sys.version_info.major}.{sys.version_info.minor}"
_STDLIB_SKIP = {"site-packages", "test", "tests", "idle_test", "idlelib", "tkinter",
                "turtledemo", "ensurepip", "lib2to3", "__pycache__"}
# Extension modules of the interpreter's test suite, and tkinter's (X11 with it).
_DYNLOAD_SKIP = re.compile(r"^(_test|_xxtest|xxlimited|_ctypes_test|_tkinter)")
_ZONEINFO = Path("/usr/share/zoneinfo")
_LDD_LINE = re.compile(r"=>\s+(/\S+)|^\s*(/\S+)\s+\(")
# The code that decides what a build holds: part of the inputs' key.
_BUILD_CODE = ("contents.py", "rootfs.py", "oci.py", "pycache.py", "distributions.py")


@dataclass(frozen=True)
class Contents:
    """What the image holds besides the skeleton and the bytecode."""

    files: dict[str, Path]  # path inside the image → host file
    links: dict[str, str]  # path inside the image → symlink target
    missing: list[str]  # quant libraries not installed on this host
    libraries: dict[str, list[str]]  # ELF file (its ``_elf_key``) → host libraries it needs


def _stdlib(layout: oci.PythonLayout) -> dict[str, Path]:
    files: dict[str, Path] = {}
    stdlib = layout.prefix / "lib" / _VER
    for root, dirs, names in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in _STDLIB_SKIP and not d.startswith("config-"))
        for n in names:
            if Path(root).name == "lib-dynload" and _DYNLOAD_SKIP.match(n):
                continue
            p = Path(root) / n
            files[f"{oci.PY_PREFIX}/lib/{_VER}/{p.relative_to(stdlib)}"] = p
    return files


def _python(layout: oci.PythonLayout) -> tuple[dict[str, Path], list[str]]:
    """The interpreter, its stdlib, the quant libraries and the SDK; the missing libraries."""
    files = _stdlib(layout)
    files[f"{oci.PY_PREFIX}/bin/{_VER}"] = (layout.prefix / "bin" / _VER).resolve()
    for lib in sorted((layout.prefix / "lib").glob("libpython*.so*")):
        files[f"{oci.PY_PREFIX}/lib/{lib.name}"] = lib.resolve()
    dists, missing = distributions()
    site = layout.site_packages.resolve()
    for dist in dists:
        for p in image_files(dist, site):
            files[f"{oci.SITE_PACKAGES}/{p.relative_to(site)}"] = p
    for p in sorted((layout.sdk / "pitwall").rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            files[f"{oci.SDK}/{p.relative_to(layout.sdk)}"] = p
    return files, missing


def _elf_key(elf: Path) -> str:
    st = elf.stat()
    return f"{elf}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}"


def _shared_libs(elves: list[Path], known: dict[str, list[str]]) -> dict[str, list[str]]:
    """The host libraries each ELF file links to, by :func:`_elf_key`: ``known`` for the
    files unchanged since it was made (``ldd`` is most of a rebuild), ``ldd`` for the rest."""
    found: dict[str, list[str]] = {}
    for elf in elves:
        key = _elf_key(elf)
        if key in known:
            found[key] = known[key]
            continue
        res = subprocess.run(["ldd", str(elf)], capture_output=True, text=True, check=False)
        libs = set()
        for line in res.stdout.splitlines():
            m = _LDD_LINE.search(line)
            path = (m.group(1) or m.group(2)) if m else None
            if path is not None and path.startswith(("/usr/", "/lib")):
                libs.add(path)
        found[key] = sorted(libs)
    return found


def _zoneinfo(files: dict[str, Path], links: dict[str, str]) -> None:
    """The time-zone database (pandas, zoneinfo and pyarrow read it), without the
    leap-second variants; links within it stay links."""
    for root, dirs, names in os.walk(_ZONEINFO):
        dirs[:] = sorted(d for d in dirs if d != "right")
        for n in [*dirs, *names]:
            p = Path(root) / n
            if p.is_symlink():
                target = os.readlink(p)
                if not target.startswith("/"):  # not ``localtime`` → the host's /etc
                    links[str(p)] = target
            elif p.is_file():
                files[str(p)] = p


def contents(layout: oci.PythonLayout, known: dict[str, list[str]] | None = None) -> Contents:
    """Everything the image holds but its skeleton and bytecode, read from this host;
    ``known``: the ``libraries`` of a previous build's contents."""
    files, missing = _python(layout)
    elves = [p for p in files.values() if p.suffix == ".so" or ".so." in p.name
             or p.name == _VER]
    libraries = _shared_libs(elves, known or {})
    prefix = layout.prefix.resolve()
    for lib in sorted({lib for libs in libraries.values() for lib in libs}):
        if prefix in Path(lib).resolve().parents:
            continue  # libpython: already at /opt/python/lib
        # Keep the name the loader asks for, under /usr: /lib and /lib64 are symlinks there.
        name = re.sub(r"^/(lib|lib64)/", r"/usr/\1/", lib)
        files[name] = Path(lib).resolve()
    links: dict[str, str] = {}
    _zoneinfo(files, links)
    return Contents(files, links, missing, libraries)


def inputs_key(layout: oci.PythonLayout) -> str:
    """A digest of what a build would read, from file metadata only (no hashing of
    content, no ``ldd``): a backend finds its built image with it in a fraction of a
    second. Any change of a source file, an installed distribution (its ``RECORD``),
    the host's shared libraries (``ld.so.cache``), the time zones or the build code
    gives a new key, hence a build (whose content digest may well be an old one)."""
    h = hashlib.sha256(f"{sys.version}\0{sys.implementation.cache_tag}\0".encode())
    here = Path(__file__).parent
    for name in _BUILD_CODE:
        h.update((here / name).read_bytes())
    stdlib = _stdlib(layout)
    dists, missing = distributions()
    paths = [*stdlib.values(), layout.prefix / "bin" / _VER, Path("/etc/ld.so.cache"),
             *(layout.prefix / "lib").glob("libpython*.so*"),
             *(p for p in (layout.sdk / "pitwall").rglob("*") if "__pycache__" not in p.parts),
             *(Path(root) for root, _dirs, _names in os.walk(_ZONEINFO))]
    for path in sorted(paths):
        with contextlib.suppress(OSError):
            st = path.stat()
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0".encode())
    for dist in dists:  # the sha256 of every installed file
        h.update(f"{dist.metadata['Name']}\0{dist.version}\0".encode())
        h.update((dist.read_text("RECORD") or "").encode())
    h.update(json.dumps(missing).encode())
    return h.hexdigest()
