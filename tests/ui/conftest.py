"""A real JupyterLab (with the Pitwall extensions and the embedded stack) in a real
headless Chromium driven by Playwright. Screenshots go to test-artifacts/ui/."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pitwall_executor.datalake.catalog import Catalog, generate_dataset

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"
SYMBOLS = ["AAPL", "MSFT", "AMZN"]
TOKEN = "pitwall-ui-test"


@dataclass
class Lab:
    url: str
    token: str
    notebooks: Path
    data_dir: Path

    def api(self, path: str) -> bytes:
        req = urllib.request.Request(f"{self.url}/pitwall/api/{path}",
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            body: bytes = resp.read()
            return body


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    built = ROOT / "server_extension" / "pitwall_server" / "labextension" / "package.json"
    if not built.exists():
        pytest.fail("the labextension is not built: run `make labextension` (make test does)")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make services` (it installs chromium)")
    data_dir = tmp_path_factory.mktemp("pitwall-ui")
    data_dir.chmod(0o755)
    generate_dataset(Catalog(data_dir / "lake"), "sample", symbols=SYMBOLS,
                     start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 29), seed=3)
    notebooks = tmp_path_factory.mktemp("notebooks")
    shutil.copy(ROOT / "notebooks" / "sma_crossover.ipynb", notebooks)
    port = _free_port()
    # Only this lab's Pitwall settings: nothing another test left in the environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITWALL_")}
    env.update({"PITWALL_DATA_DIR": str(data_dir),
                "JUPYTER_CONFIG_DIR": str(tmp_path_factory.mktemp("jupyter-config"))})
    log_path = ARTIFACTS / "jupyterlab.log"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")  # a file, not a pipe: a full pipe would stall the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         f"--port={port}", "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
         f"--ServerApp.root_dir={notebooks}", "--PitwallExtension.default_start=2024-03-04",
         "--PitwallExtension.default_end=2024-03-15",
         '--ServerApp.jpserver_extensions={"pitwall_server": True}'],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    lab = Lab(url=url, token=TOKEN, notebooks=notebooks, data_dir=data_dir)
    deadline = time.monotonic() + 120
    while True:
        try:
            lab.api("v1/backtests?limit=1")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                out = log_path.read_text(errors="replace")
                pytest.fail(f"JupyterLab with the Pitwall extension did not start:\n{out[-3000:]}")
            time.sleep(0.5)
    try:
        yield lab
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def page(lab: Lab, request: pytest.FixtureRequest) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        context = browser.new_context(viewport={"width": 1500, "height": 950})
        tab = context.new_page()
        tab.set_default_timeout(60_000)
        # Browser console errors are printed, so a failing test shows what the page said.
        tab.on("console", lambda msg: print(f"[browser {msg.type}] {msg.text}")
               if msg.type in ("error", "warning") else None)
        tab.on("pageerror", lambda exc: print(f"[browser pageerror] {exc}"))
        yield tab
        tab.screenshot(path=str(ARTIFACTS / f"last-{request.node.name}.png"), full_page=True)
        browser.close()
