"""Strategy bundles: a zip with ``manifest.json`` and the strategy's files.

A bundle is built on the researcher's side (CLI, notebook) and validated again on the
trusted side before anything is unpacked: size, entry names (no absolute paths, no
``..``, no links), total unpacked size and ratio (zip bombs), and the sha256 of every
file against the manifest. The bundle's identity is the sha256 of its canonical
manifest, which covers every file's hash, so rebuilding the same sources gives the same
id whatever the zip timestamps.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitwall.errors import BundleError
from pitwall.version import __version__

MANIFEST = "manifest.json"
FORMAT = 1
MAX_FILES = 64
MAX_UNPACKED = 64 * 1024 * 1024
MAX_RATIO = 100
MAX_SPANS = 10_000
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}){0,3}$")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Bundle:
    """A validated bundle: its manifest, its files, and its identity."""

    manifest: dict[str, Any]
    files: dict[str, bytes]
    sha256: str

    @property
    def entrypoint(self) -> str:
        return str(self.manifest["entrypoint"])

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    def extract(self, dest: Path) -> None:
        """Write the files (not the manifest) under ``dest``, world-readable, read-only."""
        dest.mkdir(parents=True, exist_ok=True)
        for name, data in sorted(self.files.items()):
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(0o444)


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_bundle(
    files: dict[str, str | bytes],
    *,
    entrypoint: str,
    kind: str = "vectorized",
    source_cells: list[str] | None = None,
    cell_lines: list[dict[str, Any]] | None = None,
    sdk_version: str | None = None,
) -> bytes:
    """Pack strategy files into a bundle zip.

    ``entrypoint`` is ``"file.py"`` or ``"file.py:function"``. A bundle built from a
    notebook (:mod:`pitwall.notebook_bundle`) records ``source_cells`` (the ids of the
    cells that went in) and ``cell_lines``: spans ``{label, first_line, n_lines, cell_id,
    number, file}`` saying that lines ``first_line..first_line+n_lines-1`` of ``file`` are
    lines 1.. of notebook cell ``number`` (1-based), so a traceback names the cell.

    >>> data = build_bundle({"strategy.py": "x = 1\\n"}, entrypoint="strategy.py")
    >>> load_bundle(data).entrypoint
    'strategy.py'
    """
    blobs = {n: v.encode() if isinstance(v, str) else v for n, v in files.items()}
    manifest = {
        "format": FORMAT,
        "entrypoint": entrypoint,
        "kind": kind,
        "sdk_version": sdk_version or __version__,
        "source_cells": source_cells or [],
        **({"cell_lines": cell_lines} if cell_lines else {}),
        "files": {name: _sha(data) for name, data in sorted(blobs.items())},
    }
    _check_manifest(manifest)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in [(MANIFEST, _canonical(manifest)), *sorted(blobs.items())]:
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            zf.writestr(info, data)
    return buf.getvalue()


def _check_name(name: str) -> None:
    if not _NAME.match(name) or ".." in name.split("/"):
        raise BundleError(
            f"bundle entry {name!r} is not allowed: use relative names of letters, digits, "
            "'_', '-', '.' (no absolute paths, no '..', at most 4 levels)"
        )


def _check_manifest(manifest: Any) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"manifest.json must be an object with format {FORMAT}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise BundleError("manifest.json must list the bundle's files with their sha256")
    for name, digest in files.items():
        _check_name(name)
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise BundleError(f"manifest.json: sha256 of {name!r} is not a hex digest")
    entry = manifest.get("entrypoint")
    if not isinstance(entry, str) or entry.split(":", 1)[0] not in files:
        raise BundleError(f"entrypoint {entry!r} does not name a file of the bundle")
    if not entry.split(":", 1)[0].endswith(".py"):
        raise BundleError(f"entrypoint {entry!r} must be a .py file, optionally ':function'")
    if manifest.get("kind") not in ("vectorized", "event"):
        raise BundleError("manifest.json: kind must be 'vectorized' or 'event'")
    _check_cell_lines(manifest.get("cell_lines", []))


def _check_cell_lines(spans: Any) -> None:
    """A notebook bundle's line map is shown to people: plain, bounded data only."""
    ints = ("first_line", "n_lines", "number")
    texts = ("label", "cell_id", "file")
    if not isinstance(spans, list) or len(spans) > MAX_SPANS or not all(
            isinstance(span, dict) and set(span) == {*ints, *texts}
            and all(type(span[k]) is int and 0 <= span[k] < 10**7 for k in ints)
            and all(isinstance(span[k], str) and len(span[k]) <= 128 for k in texts
                    if k != "cell_id" or span[k] is not None)
            for span in spans):
        raise BundleError("manifest.json: cell_lines must be a list of at most "
                          f"{MAX_SPANS} spans {{label, first_line, n_lines, cell_id, number, "
                          "file}}; rebuild the bundle with pitwall.notebook_bundle")


def _read_members(zf: zipfile.ZipFile) -> dict[str, bytes]:
    infos = zf.infolist()
    if len(infos) > MAX_FILES + 1:
        raise BundleError(f"bundle holds {len(infos)} entries; the limit is {MAX_FILES}")
    total = 0
    out: dict[str, bytes] = {}
    for info in infos:
        _check_name(info.filename)
        mode = info.external_attr >> 16
        if info.is_dir() or stat.S_IFMT(mode) not in (0, stat.S_IFREG):
            raise BundleError(f"bundle entry {info.filename!r} is not a regular file (links and "
                              "directories are refused)")
        if info.filename in out:
            raise BundleError(f"bundle entry {info.filename!r} appears twice")
        total += info.file_size
        if total > MAX_UNPACKED or info.file_size > MAX_RATIO * max(info.compress_size, 1024):
            raise BundleError("bundle unpacks to more than it may (zip bomb?); "
                              f"keep it under {MAX_UNPACKED // 2**20} MiB unpacked")
        with zf.open(info) as fh:
            data = fh.read(info.file_size + 1)
        if len(data) != info.file_size:
            raise BundleError(f"bundle entry {info.filename!r} lies about its size")
        out[info.filename] = data
    return out


def load_bundle(data: bytes, *, max_bytes: int = 16 * 1024 * 1024) -> Bundle:
    """Validate a bundle zip and return its contents; raise :class:`BundleError` if unsafe."""
    if len(data) > max_bytes:
        raise BundleError(f"bundle is {len(data)} bytes; the limit is {max_bytes} bytes. "
                          "Keep data out of the bundle: strategies read bars from the dataset")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = _read_members(zf)
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as exc:
        raise BundleError(f"bundle is not a valid zip file ({exc}); rebuild it") from exc
    raw = members.pop(MANIFEST, None)
    if raw is None:
        raise BundleError("bundle has no manifest.json; build it with pitwall.bundle.build_bundle")
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"manifest.json is not valid JSON: {exc}") from exc
    _check_manifest(manifest)
    if set(members) != set(manifest["files"]):
        raise BundleError("bundle files do not match manifest.json: "
                          f"zip has {sorted(members)}, manifest lists {sorted(manifest['files'])}")
    for name, blob in members.items():
        if _sha(blob) != manifest["files"][name]:
            raise BundleError(f"sha256 of {name!r} does not match manifest.json; "
                              "rebuild the bundle")
    return Bundle(manifest=manifest, files=members, sha256=_sha(_canonical(manifest)))
