"""A strategy that prints terminal escapes and raises: nothing it wrote can drive a terminal.

Through a real gVisor job (vectorized and event-driven): the stored reason, the stored log,
what ``pitwall run`` and ``pitwall jobs`` print, and what the API answers (the JobView and
the log) hold no control character but newline and tab, and still carry the words.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from tests.e2e.cli_kit import SYMBOLS, pitwall, sample_data_dir

from pitwall_executor.config import load_config
from pitwall_executor.jobs.researchers import create_researcher
from pitwall_executor.orchestration.embedded import EmbeddedServer
from pitwall_executor.stack import Stack

pytestmark = pytest.mark.sandbox

#: What a terminal could act on: C0 controls (but tab and newline), DEL, C1 controls.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
ESCAPES = r"\x1b[2J\x1b]0;pwned\x07"  # clear the screen, retitle the window
ARGS = ["--symbols", ",".join(SYMBOLS[:2]), "--start", "2024-03-04", "--end", "2024-03-05"]
RAISE = (f'sys.stderr.write("{ESCAPES}clear-screen attempt\\x1b[31m in red\\x1b[0m\\n")\n'
         f'        raise RuntimeError("boom {ESCAPES}\\x9b6n\\x07 after the bell")')
STRATEGIES = {
    "vectorized": ("import sys\nimport pitwall\n\n@pitwall.vectorized\ndef s(bars):\n"
                   f"        {RAISE}\n").replace("\n        ", "\n    "),
    "event": ("import sys\nimport pitwall\n\nclass S(pitwall.Strategy):\n"
              f"    def on_bar(self, ctx):\n        {RAISE}\n"),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_data_dir(tmp_path_factory, end=dt.date(2024, 3, 8))


def _clean(text: str) -> bool:
    return CONTROL.search(text) is None


@pytest.mark.parametrize("engine", sorted(STRATEGIES))
def test_a_hostile_failure_is_shown_without_its_escapes(data_dir: Path, tmp_path: Path,
                                                        engine: str) -> None:
    strategy = tmp_path / "hostile.py"
    strategy.write_text(STRATEGIES[engine])
    res = pitwall(data_dir, "run", str(strategy), *ARGS, "--engine", engine)
    assert res.exit_code == 1, res.output
    assert "FAILED" in res.output and "RuntimeError: boom" in res.output, res.output
    assert "after the bell" in res.output and _clean(res.output), repr(res.output)
    job_id = res.output.split()[1].rstrip(":")

    listed = pitwall(data_dir, "jobs", "list").output + pitwall(data_dir, "jobs", "show",
                                                                job_id).output
    assert "RuntimeError: boom" in listed and _clean(listed), repr(listed)

    stack = Stack.from_config(load_config(data_dir=data_dir))
    assert stack.backend.name == "gvisor"
    with stack.store.engine.connect() as conn:  # the stored row, not a view of it
        reason = conn.execute(sa.text("SELECT reason FROM jobs WHERE id = :id"),
                              {"id": job_id}).scalar_one()
    assert "RuntimeError: boom" in reason and _clean(reason), repr(reason)
    log_path = stack.store.artifacts(job_id)["log.txt"]["uri"].removeprefix("file://")
    log = Path(log_path).read_text()
    assert "Traceback" in log and "clear-screen attempt in red" in log, log
    assert _clean(log) and "\n" in log, repr(log)

    _check_api(stack, job_id, admin=f"root-{engine}")


def _check_api(stack: Stack, job_id: str, *, admin: str) -> None:
    token = create_researcher(stack.store, admin, admin=True)
    server = EmbeddedServer(stack, workers=0).start()
    try:
        headers = {"Authorization": f"Bearer {token}"}
        res = requests.get(f"{server.url}/v1/backtests/{job_id}", headers=headers, timeout=10)
        assert res.status_code == 200, res.text
        assert "\\u001b" not in res.text and "\\u0007" not in res.text, res.text
        view = json.loads(res.text)
        assert view["status"] == "FAILED" and "RuntimeError: boom" in view["reason"]
        assert _clean(view["reason"]), repr(view["reason"])
        log = requests.get(f"{server.url}/v1/backtests/{job_id}/logs", headers=headers,
                           timeout=10)
        assert log.status_code == 200 and "Traceback" in log.text
        assert _clean(log.text), repr(log.text)
    finally:
        server.stop()
        stack.store.close()
