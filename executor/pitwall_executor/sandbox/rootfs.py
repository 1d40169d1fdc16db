"""The sandbox image's root file system on this host, content-addressed (§5 of
docs/architecture.md; what it holds: ``sandbox/contents.py``).

A store (``RootfsStore``, by default per user: :func:`default_store`) holds::

    <hex>/root/           the tree: the gVisor backend's read-only root, Docker's import
    <hex>/manifest.json   every path of the tree → type, size, sha256, mode; its own
                          sha256 is ``<hex>``, the image digest a run's manifest records
    <hex>/sources.json    path → the host file it was copied from (path, size, mtime,
                          inode), and what ``ldd`` said of each ELF file: what a later
                          build may link instead of copying, and need not ask again
    <hex>/used            touched whenever a sandbox starts on it (garbage collection)
    inputs/<key>          the digest built from inputs ``<key>`` (``contents.inputs_key``)
    .lock                 one build at a time on this host

:meth:`RootfsStore.ensure` finds the image of this host's interpreter, venv and SDK by
the inputs' key (file metadata only: well under a second) and builds it when missing.
A build copies every file (0444, or 0555 when executable; nothing can change a file
under a running sandbox), hashes it, compiles the bytecode (``pycache.py``) and writes
the manifest; a file whose source is unchanged since the latest build is hard-linked
from it instead, so a rebuild after an SDK edit takes 1-2 s. Why a per-user
store rather than one per data dir: every worker, test session and benchmark of the
user then shares one build (a first build copies ~0.7 GB and compiles ~3,300 modules);
the digest, not the place, is what a run pins.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pitwall.errors import SandboxError
from pitwall_executor.sandbox import contents, oci, owner, pycache

log = logging.getLogger(__name__)

FORMAT = "pitwall-sandbox-rootfs/1"
#: An image no process holds and none used this long is removed by the next build.
UNUSED_FOR_S = 3600.0
_CHUNK = 1 << 20
#: This process's shared locks on the images it uses (digest → open ``used`` file): a
#: build's garbage collection never removes an image a live process holds.
_HELD: dict[str, int] = {}


def default_store() -> Path:
    """The per-user store, beside the other caches of the user."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "pitwall" / "sandbox-images"


@dataclass(frozen=True)
class Rootfs:
    """One built image: its tree and its digest (``sha256:<hex>`` of its manifest)."""

    path: Path
    digest: str

    @property
    def manifest_path(self) -> Path:
        return self.path.parent / "manifest.json"

    def manifest(self) -> dict[str, dict[str, Any]]:
        """Every path of the tree (``/opt/python/bin/python3.11``…) → its entry."""
        entries: dict[str, dict[str, Any]] = json.loads(self.manifest_path.read_bytes())["entries"]
        return entries

    def touch(self) -> None:
        """Mark the image as used now (garbage collection removes long unused ones)."""
        with contextlib.suppress(OSError):
            (self.path.parent / "used").touch()

    def held(self) -> bool:
        """Whether a live process holds the image (:meth:`hold`)."""
        try:
            with (self.path.parent / "used").open("rb") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False

    def hold(self) -> None:
        """Keep the image for the life of this process: a shared lock on ``used``."""
        if self.digest in _HELD:
            return
        fd = os.open(self.path.parent / "used", os.O_RDONLY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_SH)
        _HELD[self.digest] = fd

    def release(self) -> None:
        """Undo :meth:`hold`."""
        fd = _HELD.pop(self.digest, None)
        if fd is not None:
            os.close(fd)


@dataclass
class _Previous:
    """The latest build: what a new build may link instead of copying or compiling."""

    tree: Path
    entries: dict[str, dict[str, Any]]
    sources: dict[str, list[Any]]
    libraries: dict[str, list[str]]

    def file(self, arc: str, signature: list[Any]) -> tuple[Path, str] | None:
        entry = self.entries.get(arc)
        if entry is None or self.sources.get(arc) != signature:
            return None
        return self.tree / arc.lstrip("/"), str(entry["sha256"])

    def pyc(self, arc: str, sha: str) -> Path | None:
        if self.entries.get(arc, {}).get("sha256") != sha:
            return None
        path = self.tree / pycache.pyc_path(arc).lstrip("/")
        return path if path.is_file() else None


@dataclass
class _Build:
    tree: Path
    previous: _Previous | None
    hashes: dict[str, str] = field(default_factory=dict)  # path in image → sha256
    sources: dict[str, list[Any]] = field(default_factory=dict)
    copied: int = 0


def _signature(src: Path) -> list[Any]:
    st = src.stat()
    return [str(src), st.st_size, st.st_mtime_ns, st.st_ino]


def _copy(src: Path, dest: Path) -> str:
    """Copy ``src`` to ``dest`` read-only (executable if it was); its sha256."""
    h = hashlib.sha256()
    with src.open("rb") as fin, dest.open("xb") as fout:
        while chunk := fin.read(_CHUNK):
            h.update(chunk)
            fout.write(chunk)
    dest.chmod(0o555 if src.stat().st_mode & 0o111 else 0o444)
    return h.hexdigest()


def _place(build: _Build, arc: str, src: Path) -> None:
    dest = build.tree / arc.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    signature = _signature(src)
    old = build.previous.file(arc, signature) if build.previous else None
    if old is not None:
        with contextlib.suppress(OSError):
            os.link(old[0], dest)
            build.hashes[arc] = old[1]
    if arc not in build.hashes:
        build.hashes[arc] = _copy(src, dest)
        build.copied += 1
    build.sources[arc] = signature


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _walk(tree: Path) -> Iterator[tuple[str, os.DirEntry[str]]]:
    stack = [tree]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                yield "/" + Path(entry.path).relative_to(tree).as_posix(), entry
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))


def manifest_entries(tree: Path, known: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The manifest of ``tree``: every path → its entry (``known``: sha256s already had)."""
    entries: dict[str, dict[str, Any]] = {}
    for arc, entry in _walk(tree):
        st = entry.stat(follow_symlinks=False)
        if entry.is_symlink():
            entries[arc] = {"type": "symlink", "target": os.readlink(entry.path)}
        elif entry.is_dir(follow_symlinks=False):
            entries[arc] = {"type": "dir", "mode": f"{st.st_mode & 0o7777:04o}"}
        else:
            sha = known.get(arc) or _sha256(Path(entry.path))
            entries[arc] = {"type": "file", "size": st.st_size, "sha256": sha,
                            "mode": f"{st.st_mode & 0o7777:04o}"}
    return dict(sorted(entries.items()))


def _fill(build: _Build, held: contents.Contents) -> pycache.BuildStats:
    """Skeleton, files, links, bytecode; every directory 0755 (the sandbox's uid reads)."""
    oci.skeleton(build.tree)
    for arc, src in sorted(held.files.items()):
        _place(build, arc, src)
    for arc, target in sorted(held.links.items()):
        link = build.tree / arc.lstrip("/")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
    sources = {a: s for a, s in build.hashes.items() if a.endswith(".py")}
    previous = build.previous
    stats = pycache.compile_into(build.tree, sources,
                                 previous.pyc if previous else (lambda arc, sha: None))
    for arc, sha in sources.items():  # a linked .pyc's content is the previous one's
        old = previous.pyc(arc, sha) if previous else None
        new = build.tree / pycache.pyc_path(arc).lstrip("/")
        if previous is not None and old is not None and new.is_file() and new.samefile(old):
            build.hashes[pycache.pyc_path(arc)] = previous.entries[pycache.pyc_path(arc)][
                "sha256"]
    for dirpath, _dirs, names in os.walk(build.tree):
        os.chmod(dirpath, 0o755)
        for name in names:  # the skeleton's files and the bytecode compiled now
            path = Path(dirpath) / name
            arc = "/" + path.relative_to(build.tree).as_posix()
            if arc not in build.hashes and not path.is_symlink():
                path.chmod(0o444)
    return stats


class RootfsStore:
    """The images built on this host, under ``root`` (see the module's docstring)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or default_store()).resolve()
        (self.root / "inputs").mkdir(parents=True, exist_ok=True)

    def ensure(self, layout: oci.PythonLayout) -> Rootfs:
        """The image of ``layout`` (this host's interpreter, venv and SDK), built now
        if this store lacks it; marked as in use."""
        key = contents.inputs_key(layout)
        for _ in range(2):
            found = self._lookup(key)
            if found is None:
                with self._locked():
                    found = self._lookup(key) or self._build_or_explain(layout, key)
            found.hold()
            if found.manifest_path.is_file():  # not collected while we took it
                found.touch()
                return found
            found.release()
        raise SandboxError(f"the sandbox image in {self.root} keeps disappearing; is another "
                           "process removing it? Run `pitwall image build` and retry")

    def _build_or_explain(self, layout: oci.PythonLayout, key: str) -> Rootfs:
        log.info("building the sandbox image of %s into %s (once: about 10 s the first "
                 "time, a second or two after an SDK edit)", layout.site_packages, self.root)
        try:
            return self.build(layout, key)
        except OSError as exc:
            raise SandboxError(f"building the sandbox image in {self.root} failed ({exc}); "
                               "free space there, or point XDG_CACHE_HOME at another disk, "
                               "then retry (or run `pitwall image build`)") from exc

    def get(self, digest: str) -> Rootfs | None:
        """The built image of ``digest`` (``sha256:<hex>``), if this store has it."""
        hexdigest = digest.removeprefix("sha256:")
        tree = self.root / hexdigest / "root"
        if len(hexdigest) != 64 or not (tree.parent / "manifest.json").is_file():
            return None
        return Rootfs(tree, f"sha256:{hexdigest}")

    def _lookup(self, key: str) -> Rootfs | None:
        try:
            digest = (self.root / "inputs" / key).read_text().strip()
        except OSError:
            return None
        return self.get(digest)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when closed, or when the holder dies
            yield

    def build(self, layout: oci.PythonLayout, key: str | None = None) -> Rootfs:
        """Build the image of ``layout`` (under the lock: :meth:`ensure`)."""
        started = time.monotonic()
        key = key or contents.inputs_key(layout)
        previous = self._previous()
        held = contents.contents(layout, previous.libraries if previous else None)
        work = self.root / f".build-{owner.current().token}-{uuid.uuid4().hex[:8]}"
        try:
            build = _Build(work / "root", previous)
            stats = _fill(build, held)
            entries = manifest_entries(build.tree, build.hashes)
            data = json.dumps({"format": FORMAT, "entries": entries}, sort_keys=True,
                              separators=(",", ":")).encode()
            hexdigest = hashlib.sha256(data).hexdigest()
            (work / "manifest.json").write_bytes(data)
            (work / "sources.json").write_text(json.dumps(
                {"files": build.sources, "libraries": held.libraries}))
            try:
                os.rename(work, self.root / hexdigest)
            except OSError:  # built before from other inputs: the same image
                if self.get(hexdigest) is None:
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        _write_atomically(self.root / "inputs" / key, hexdigest)
        rootfs = Rootfs(self.root / hexdigest / "root", f"sha256:{hexdigest}")
        rootfs.touch()
        rootfs.hold()
        log.info("sandbox image sha256:%s built in %.1f s: %d entries, %d files copied, "
                 "%d modules compiled, %d missing libraries %s", hexdigest,
                 time.monotonic() - started, len(entries), build.copied, stats.compiled,
                 len(held.missing), held.missing)
        self.collect_garbage(keep=rootfs.digest)
        return rootfs

    def _previous(self) -> _Previous | None:
        """The most recently used image, to link from."""
        images = self._images()
        if not images:
            return None
        latest = max(images, key=lambda d: (d / "used").stat().st_mtime)
        try:
            entries = json.loads((latest / "manifest.json").read_bytes())["entries"]
            sources = json.loads((latest / "sources.json").read_bytes())
            return _Previous(latest / "root", entries, sources["files"], sources["libraries"])
        except (OSError, ValueError, KeyError):
            return None

    def _images(self) -> list[Path]:
        return sorted(d for d in self.root.iterdir()
                      if len(d.name) == 64 and (d / "used").is_file())

    def collect_garbage(self, *, keep: str) -> list[str]:
        """Remove the images unused for :data:`UNUSED_FOR_S` (never ``keep``), their
        inputs' entries and dead builds; the digests removed."""
        removed: list[str] = []
        for d in self._images():
            if f"sha256:{d.name}" == keep or time.time() - (d / "used").stat().st_mtime < (
                    UNUSED_FOR_S):
                continue
            with (d / "used").open("rb") as fh:
                try:  # held while removed: a process taking it now waits, then misses it
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process runs sandboxes on it
                shutil.rmtree(d, ignore_errors=True)
                removed.append(f"sha256:{d.name}")
        for entry in (self.root / "inputs").iterdir():
            with contextlib.suppress(OSError):
                if self.get(entry.read_text().strip()) is None:
                    entry.unlink()
        for d in self.root.glob(".build-*"):
            who = owner.Owner.parse("-".join(d.name.split("-")[1:3]))
            if who is None or not who.alive():
                shutil.rmtree(d, ignore_errors=True)
        return removed


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":  # deploy/sandbox/Dockerfile's build stage: ``python -m … DEST``
    import sys

    dest = Path(sys.argv[1])
    built = RootfsStore().ensure(oci.PythonLayout.of_this_interpreter())
    shutil.copytree(built.path, dest, symlinks=True)
    shutil.copyfile(built.manifest_path, f"{dest}.manifest.json")
    print(built.digest)
