"""Hostile event-driven strategies, driven through the production staging code
(``Stack.submit`` + ``Worker.run_one``, real gVisor): one that never answers, one that
answers out of turn, one that floods the channel, one that forges an error frame to look
like a platform failure. Each ends terminal exactly once, with a sentence, and never as
a retried infrastructure failure."""

from __future__ import annotations

import datetime as dt

import pytest

from pitwall.bundle import build_bundle
from pitwall.models import BacktestSpec, EngineKind, JobStatus, JobView, Limits
from pitwall_executor.config import load_config
from pitwall_executor.datalake.catalog import Catalog, generate_dataset
from pitwall_executor.orchestration.worker import Worker
from pitwall_executor.stack import Stack

HEAD = """import os, struct, time
import pitwall

CHANNEL = 3  # the runner's private dup of the original stdout (runner.take_result_channel)
HEADER = struct.Struct(">4sBQ")


def frame(kind, payload):
    return HEADER.pack(b"PWL1", kind, len(payload)) + payload

"""

HOSTILE = {
    "never_answers": HEAD + """
class S(pitwall.Strategy):
    def on_bar(self, ctx):
        time.sleep(3600)
""",
    "answers_out_of_turn": HEAD + """
class S(pitwall.Strategy):
    def on_bar(self, ctx):
        # an extra, empty ORDERS answer before the runner sends the real one
        os.write(CHANNEL, frame(18, struct.pack("<II", 0, 0)))
""",
    "floods_the_channel": HEAD + """
class S(pitwall.Strategy):
    def on_bar(self, ctx):
        junk = frame(18, b"x" * (1 << 20))
        for _ in range(200):
            os.write(CHANNEL, junk)
""",
    "forges_a_platform_error": HEAD + """
import json


class S(pitwall.Strategy):
    def on_bar(self, ctx):
        body = json.dumps({"error": "SandboxError",
                           "message": "gVisor platform failure, retry the job"}).encode()
        os.write(CHANNEL, frame(2, body))
        time.sleep(2)
""",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Stack:
    root = tmp_path_factory.mktemp("hostile-event")
    root.chmod(0o755)
    generate_dataset(Catalog(root / "lake"), "sample", symbols=["AAPL"],
                     start=dt.date(2024, 3, 4), end=dt.date(2024, 3, 5), seed=3)
    return Stack.from_config(load_config(environ={}, data_dir=root, sandbox="gvisor"))


def run(stack: Stack, source: str) -> JobView:
    bundle = build_bundle({"strategy.py": source}, entrypoint="strategy.py", kind="event")
    spec = BacktestSpec(dataset="sample", universe=["AAPL"], start=dt.date(2024, 3, 4),
                        end=dt.date(2024, 3, 5), engine=EngineKind.EVENT,
                        limits=Limits(timeout_s=10, memory_mb=512))
    job_id = stack.submit(spec, bundle, researcher="mallory")
    worker = Worker(stack)
    while worker.run_one(timeout=1) is not None:
        pass  # an infrastructure retry would run here again: none may happen
    view = stack.store.get(job_id)
    assert view.status.terminal, view
    assert view.attempt == 1, "a strategy's fault must never be retried"
    assert not list((stack.config.jobs_dir / job_id).glob("attempt-*"))  # nothing left
    return view


def test_a_strategy_that_never_answers_times_out(stack: Stack) -> None:
    view = run(stack, HOSTILE["never_answers"])
    assert view.status is JobStatus.TIMED_OUT and "wall-clock limit" in (view.reason or "")


def test_an_answer_out_of_turn_fails_the_job(stack: Stack) -> None:
    view = run(stack, HOSTILE["answers_out_of_turn"])
    assert view.status is JobStatus.FAILED and "out of turn" in (view.reason or "")


def test_a_flood_of_frames_is_cut_off(stack: Stack) -> None:
    view = run(stack, HOSTILE["floods_the_channel"])
    assert view.status is JobStatus.FAILED
    assert (view.reason or "").startswith("invalid strategy output")


def test_a_forged_platform_error_is_the_strategy_s_failure(stack: Stack) -> None:
    view = run(stack, HOSTILE["forges_a_platform_error"])
    assert view.status is JobStatus.FAILED
    reason = view.reason or ""
    assert "infrastructure" not in reason and "strategy" in reason
