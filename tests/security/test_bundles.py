"""Bundle attacks are refused at submit, before anything runs, with no job row left."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import zipfile

import pytest

from conftest import Env
from pitwall.bundle import build_bundle
from pitwall.errors import BundleError

STRATEGY = b"import pitwall\n"


def raw_zip(entries: list[tuple[str, bytes, int]], manifest_files: dict[str, bytes] | None = None,
            ) -> bytes:
    """A zip with a valid-looking manifest and arbitrary members (name, data, mode)."""
    files = manifest_files if manifest_files is not None else {n: d for n, d, _ in entries}
    manifest = {"format": 1, "entrypoint": "strategy.py", "kind": "vectorized",
                "sdk_version": "0.1.0", "source_cells": [],
                "files": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


REG = stat.S_IFREG | 0o644
ATTACKS = {
    "path_traversal": raw_zip([("strategy.py", STRATEGY, REG), ("../../evil.py", b"x", REG)]),
    "absolute_path": raw_zip([("strategy.py", STRATEGY, REG), ("/etc/evil.py", b"x", REG)]),
    "symlink": raw_zip([("strategy.py", STRATEGY, REG),
                        ("link.py", b"/etc/shadow", stat.S_IFLNK | 0o777)]),
    "zip_bomb": raw_zip([("strategy.py", STRATEGY, REG), ("bomb.py", b"0" * (200 * 2**20), REG)]),
    "hash_mismatch": raw_zip([("strategy.py", STRATEGY, REG)],
                             manifest_files={"strategy.py": b"something else"}),
    "not_a_zip": b"PK\x03\x04" + b"\xff" * 1000,
}


def rows(env: Env) -> int:
    return len(env.attacks.store.list_jobs(researcher="redteam", limit=100_000))


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_hostile_bundle_is_refused_at_submit(env: Env, name: str) -> None:
    before = rows(env)
    with pytest.raises(BundleError) as err:
        env.attacks.submit(env.spec(), ATTACKS[name], researcher="redteam")
    assert str(err.value)  # a sentence the researcher can act on
    assert rows(env) == before


def test_oversize_bundle_is_refused_at_submit(env: Env) -> None:
    import os

    before = rows(env)
    limit = env.attacks.config.max_bundle_mb * 2**20
    big = build_bundle({"strategy.py": STRATEGY, "blob.py": os.urandom(limit)},
                       entrypoint="strategy.py")
    with pytest.raises(BundleError, match=r"MB|bytes|large|size"):
        env.attacks.submit(env.spec(), big, researcher="redteam")
    assert rows(env) == before


@pytest.mark.parametrize("job_id", ["../../etc", "/abs", "a/../../b", "", "x" * 200])
def test_artifact_paths_cannot_leave_the_store(env: Env, job_id: str) -> None:
    with pytest.raises(ValueError, match="refusing artifact path"):
        env.attacks.artifacts.attempt_dir(job_id, 1)
    assert not (env.attacks.config.artifacts_dir.parent / "etc").exists()
