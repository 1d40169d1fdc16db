from __future__ import annotations

import io
import json
import stat
import zipfile

import pytest

from pitwall.bundle import build_bundle, load_bundle
from pitwall.errors import BundleError

SRC = "import pitwall\n"


def _zip(entries: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            if name == symlink:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, data)
    return buf.getvalue()


def _manifest(files: dict[str, bytes], entry: str = "strategy.py") -> bytes:
    import hashlib
    return json.dumps({"format": 1, "entrypoint": entry, "kind": "vectorized",
                       "files": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}}
                      ).encode()


def test_roundtrip_is_deterministic_and_identified_by_content() -> None:
    a = build_bundle({"strategy.py": SRC}, entrypoint="strategy.py:f")
    b = build_bundle({"strategy.py": SRC}, entrypoint="strategy.py:f")
    c = build_bundle({"strategy.py": SRC + "#\n"}, entrypoint="strategy.py:f")
    assert a == b
    assert load_bundle(a).sha256 == load_bundle(b).sha256 != load_bundle(c).sha256
    bundle = load_bundle(a)
    assert bundle.files == {"strategy.py": SRC.encode()} and bundle.entrypoint == "strategy.py:f"


@pytest.mark.parametrize(
    "name", ["../evil.py", "/etc/passwd", "a/../../x.py", "a\\b.py", ".hidden"]
)
def test_traversal_and_odd_names_are_refused(name: str) -> None:
    files = {"strategy.py": b"x", name: b"y"}
    with pytest.raises(BundleError, match="not allowed"):
        load_bundle(_zip({"manifest.json": _manifest(files), **files}))


def test_symlink_entries_are_refused() -> None:
    files = {"strategy.py": b"x", "link.py": b"/etc/passwd"}
    data = _zip({"manifest.json": _manifest(files), **files}, symlink="link.py")
    with pytest.raises(BundleError, match="not a regular file"):
        load_bundle(data)


def test_zip_bomb_is_refused() -> None:
    files = {"strategy.py": b"x", "big.txt": b"\0" * (8 * 1024 * 1024)}
    with pytest.raises(BundleError, match="zip bomb"):
        load_bundle(_zip({"manifest.json": _manifest(files), **files}))


def test_oversize_and_garbage_are_refused() -> None:
    with pytest.raises(BundleError, match="limit is 100 bytes"):
        load_bundle(b"x" * 101, max_bytes=100)
    with pytest.raises(BundleError, match="not a valid zip"):
        load_bundle(b"not a zip at all")


def test_tampered_file_and_missing_manifest_are_refused() -> None:
    files = {"strategy.py": b"x"}
    tampered = _zip({"manifest.json": _manifest(files), "strategy.py": b"y"})
    with pytest.raises(BundleError, match="does not match"):
        load_bundle(tampered)
    with pytest.raises(BundleError, match="no manifest"):
        load_bundle(_zip({"strategy.py": b"x"}))
    extra = _zip({"manifest.json": _manifest(files), "strategy.py": b"x", "other.py": b"z"})
    with pytest.raises(BundleError, match="do not match manifest"):
        load_bundle(extra)


def test_entrypoint_must_be_a_python_file_in_the_bundle() -> None:
    with pytest.raises(BundleError, match="does not name a file"):
        build_bundle({"strategy.py": SRC}, entrypoint="other.py")
    with pytest.raises(BundleError, match=r"must be a \.py file"):
        build_bundle({"strategy.txt": SRC}, entrypoint="strategy.txt")


def test_extract_writes_read_only_files(tmp_path: object) -> None:
    from pathlib import Path
    dest = Path(str(tmp_path)) / "b"
    load_bundle(build_bundle({"strategy.py": SRC, "lib/util.py": "x = 2\n"},
                             entrypoint="strategy.py")).extract(dest)
    assert (dest / "lib" / "util.py").read_text() == "x = 2\n"
    assert oct((dest / "strategy.py").stat().st_mode & 0o777) == "0o444"
