"""The sandbox image, built offline, and the digest a run's manifest records.

``deploy/sandbox/Dockerfile`` builds the image on a host with a registry. Here none is
reachable, so :func:`build_image` assembles an equivalent root file system from what
this host already has: the interpreter (``sys.base_prefix``, stdlib without tests or
site-packages), the pinned distributions of the project's ``.venv`` that the Dockerfile
installs (and their dependencies), the SDK, the shared libraries all of it links to
(``ldd``), the compiled bytecode of every module (at ``/opt/pitwall/pycache``, as
the backends mount it), and the skeleton of ``sandbox/oci.py``; it is written as one
reproducible tar (sorted, root-owned, mtime 0) and loaded with ``docker import``. The layout is the
gVisor backend's (``/opt/python``, ``/opt/pitwall/site-packages``, ``/opt/pitwall/sdk``)
so the same runner command works in both.

:func:`runtime_digest` is the gVisor backend's equivalent of an image digest: a hash of
what its read-only mounts show a job (skeleton, interpreter, every installed file's
recorded sha256, the SDK source, the runsc version).
"""

from __future__ import annotations

import hashlib
import json
import os
import py_compile
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from pitwall_executor.sandbox import oci, pycache
from pitwall_executor.sandbox.distributions import distributions

TAG = "pitwall-sandbox:offline"
_STDLIB_SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip",
                "lib2to3", "config-3.11-x86_64-linux-gnu", "__pycache__"}
_LDD_LINE = re.compile(r"=>\s+(/\S+)|^\s*(/\S+)\s+\(")


def _dist_files(dist: metadata.Distribution, site: Path) -> Iterator[Path]:
    for f in dist.files or []:
        path = Path(str(dist.locate_file(f))).resolve()
        if path.is_file() and site in path.parents and "__pycache__" not in path.parts:
            yield path


def _shared_libs(elves: list[Path]) -> set[Path]:
    """Host libraries the ELF files link to (one ``ldd`` per file, deduplicated)."""
    libs: set[Path] = set()
    for elf in elves:
        res = subprocess.run(["ldd", str(elf)], capture_output=True, text=True, check=False)
        for line in res.stdout.splitlines():
            m = _LDD_LINE.search(line)
            path = (m.group(1) or m.group(2)) if m else None
            if path is not None and path.startswith(("/usr/", "/lib")):
                libs.add(Path(path))
    return libs


def rootfs_entries(layout: oci.PythonLayout) -> tuple[dict[str, Path], list[str]]:
    """Map of path-in-image → host file, and the Dockerfile libraries missing here."""
    files: dict[str, Path] = {}
    prefix = layout.prefix
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = prefix / "lib" / ver
    for root, dirs, names in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in _STDLIB_SKIP)
        for n in names:
            p = Path(root) / n
            files[f"{oci.PY_PREFIX}/lib/{ver}/{p.relative_to(stdlib)}"] = p
    files[f"{oci.PY_PREFIX}/bin/{ver}"] = (prefix / "bin" / ver).resolve()
    for lib in sorted((prefix / "lib").glob("libpython*.so*")):
        files[f"{oci.PY_PREFIX}/lib/{lib.name}"] = lib.resolve()
    dists, missing = distributions()
    site = layout.site_packages.resolve()
    for dist in dists:
        for p in _dist_files(dist, site):
            files[f"{oci.SITE_PACKAGES}/{p.relative_to(site)}"] = p
    for p in sorted((layout.sdk / "pitwall").rglob("*.py")):
        files[f"{oci.SDK}/{p.relative_to(layout.sdk)}"] = p
    elves = [p for p in files.values() if p.suffix == ".so" or ".so." in p.name
             or p.name == ver]
    for lib in sorted(_shared_libs(elves)):
        # Keep the name the loader asks for, under /usr: /lib and /lib64 are symlinks there.
        name = re.sub(r"^/(lib|lib64)/", r"/usr/\1/", str(lib))
        files[name] = lib.resolve()
    return files, missing


def bytecode(files: dict[str, Path], out: Path) -> dict[str, Path]:
    """Compile every module of the image into ``out`` as the sandbox's bytecode tree:
    map of path-in-image (under ``oci.PYCACHE``, where ``PYTHONPYCACHEPREFIX`` points)
    → compiled file. Unchecked-hash ``.pyc`` files: the image is immutable and its tar
    entries' mtimes are normalised, so a timestamp check would reject every one."""
    tree: dict[str, Path] = {}
    for arc, source in files.items():
        if not arc.endswith(".py"):
            continue
        cfile = pycache.cache_path(out, arc)
        try:
            py_compile.compile(str(source), cfile=str(cfile), dfile=arc, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
        except (py_compile.PyCompileError, OSError, ValueError):
            continue  # fails the same way in a job
        tree[f"{oci.PYCACHE}/{cfile.relative_to(out).as_posix()}"] = cfile
    return tree


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def write_rootfs(tar_path: Path, layout: oci.PythonLayout) -> list[str]:
    """Write the image's root file system as a reproducible tar; the missing libraries."""
    import tempfile

    files, missing = rootfs_entries(layout)
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar, \
            tempfile.TemporaryDirectory() as tmp:
        skeleton = oci.ensure_rootfs(Path(tmp) / "rootfs")
        for path in sorted(skeleton.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(skeleton)), recursive=False,
                    filter=_normalise)
        files = {**files, **bytecode(files, Path(tmp) / "pycache")}
        for arc in sorted(files):
            tar.add(files[arc], arcname=arc.lstrip("/"), recursive=False, filter=_normalise)
        ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
        for name in ("python", "python3"):  # what `docker run IMAGE python ...` finds on PATH
            link = tarfile.TarInfo(f"usr/bin/{name}")
            link.type, link.linkname = tarfile.SYMTYPE, f"{oci.PY_PREFIX}/bin/{ver}"
            tar.addfile(_normalise(link))
    return missing


def build_image(out_dir: Path, *, tag: str = TAG) -> dict[str, object]:
    """Build the offline image, load it with ``docker import``; its record (also saved
    as ``out_dir/image.json``): tag, image id (the digest), rootfs sha256, missing libs."""
    import docker

    out_dir.mkdir(parents=True, exist_ok=True)
    tar_path = out_dir / "rootfs.tar"
    missing = write_rootfs(tar_path, oci.PythonLayout.of_this_interpreter())
    digest = hashlib.sha256()
    with tar_path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    env = [e for e in oci.environment({}) if not e.startswith("HOME=")]
    changes = [f"ENV {e.split('=', 1)[0]}={e.split('=', 1)[1]}" for e in env]
    changes += [f"USER {oci.SANDBOX_UID}:{oci.SANDBOX_UID}", "WORKDIR /scratch",
                "ENV HOME=/scratch", 'CMD ["python", "-S", "-m", "pitwall.sandbox.runner", "/job"]']
    client = docker.from_env()
    repository, _, version = tag.partition(":")
    client.api.import_image_from_file(str(tar_path), repository=repository,
                                      tag=version or "latest", changes=changes)
    image_id = client.images.get(tag).id
    record: dict[str, object] = {"tag": tag, "image": image_id,
                                 "rootfs_sha256": digest.hexdigest(),
                                 "rootfs_bytes": tar_path.stat().st_size,
                                 "missing_libraries": missing}
    (out_dir / "image.json").write_text(json.dumps(record, indent=1))
    tar_path.unlink()
    return record


def runtime_digest(layout: oci.PythonLayout, rootfs: Path, runsc: str) -> str:
    """``sha256:…`` of what the gVisor backend's mounts show a job (its "image")."""
    h = hashlib.sha256()
    for path in sorted(rootfs.rglob("*")):
        h.update(str(path.relative_to(rootfs)).encode())
        if path.is_symlink():
            h.update(os.readlink(path).encode())
        elif path.is_file():
            h.update(path.read_bytes())
    h.update(sys.version.encode())
    h.update((layout.prefix / "bin").joinpath(f"python{sys.version_info[0]}.{sys.version_info[1]}")
             .resolve().read_bytes())
    for record in sorted(layout.site_packages.glob("*.dist-info/RECORD")):
        h.update(record.parent.name.encode())
        h.update(record.read_bytes())  # the sha256 of every installed file
    for src in sorted((layout.sdk / "pitwall").rglob("*.py")):
        h.update(str(src.relative_to(layout.sdk)).encode())
        h.update(src.read_bytes())
    version = subprocess.run([runsc, "--version"], capture_output=True, check=False).stdout
    h.update(version)
    return f"sha256:{h.hexdigest()}"
