"""`pip install` of the built wheel, in a fresh venv without Node.js, enables both halves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _uv() -> str:
    found = shutil.which("uv") or "/opt/pitwall-tools/bin/uv"
    if not Path(found).exists():
        pytest.fail("uv is missing: run `make bootstrap`")
    return found


def test_wheel_installs_and_enables_the_extensions_without_node(tmp_path: Path) -> None:
    wheels = sorted((ROOT / "dist").glob("pitwall_backtest-*.whl"))
    if not wheels:
        pytest.fail("no wheel in dist/: run `make wheel` (make test does)")
    venv = tmp_path / "venv"
    subprocess.run([_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    subprocess.run([_uv(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
                    str(wheels[-1]), "jupyterlab>=4.2,<5"], check=True)
    # Only the venv on PATH: no Node.js, no npm, nothing of this machine's tools.
    env = {"PATH": str(venv / "bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter")}
    assert shutil.which("node", path=env["PATH"]) is None
    assert shutil.which("npm", path=env["PATH"]) is None
    jupyter = str(venv / "bin" / "jupyter")

    def listing(*args: str) -> str:
        res = subprocess.run([jupyter, *args], env=env, capture_output=True, text=True,
                             timeout=120, check=True, cwd=tmp_path)
        return res.stdout + res.stderr

    labext = listing("labextension", "list")
    line = next(ln for ln in labext.splitlines() if "pitwall-labextension" in ln)
    assert "enabled" in line and "OK" in line, labext
    server = listing("server", "extension", "list")
    assert "pitwall_server" in server and "enabled" in server.split("pitwall_server")[1][:40]
    assert "pitwall_server  OK" in server.replace("\x1b[32m", "").replace("\x1b[0m", ""), server
    assert os.path.isdir(venv / "share" / "jupyter" / "labextensions" / "pitwall-labextension")
