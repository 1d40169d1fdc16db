"""Loops report their health: a stuck or dead loop makes ``/healthz`` answer 503 and
``pitwall_worker_up{loop=…}`` 0; a failing one backs off, bounded, and gives up only
after ``give_up_after_s``."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import requests

from pitwall_executor.config import load_config
from pitwall_executor.orchestration.embedded import DataDirInUseError, EmbeddedServer
from pitwall_executor.orchestration.health import (
    BACKOFF_MAX_S,
    DEAD,
    OUTAGE_BACKOFF_MAX_S,
    RETRYING,
    STUCK,
    UP,
    Health,
    Loop,
    run_guarded,
)
from pitwall_executor.stack import Stack


def test_a_stuck_loop_is_reported_until_it_passes_again() -> None:
    h = Health(stuck_after_s=0.2)
    loop = h.loop("slot-0")
    loop.tick()
    assert h.failing() == {} and h.report()["status"] == "ok"
    time.sleep(0.3)
    assert loop.state() == STUCK and h.failing()["slot-0"].startswith("stuck")
    assert 'pitwall_worker_up{loop="slot-0"} 0.0' in h.render().decode()
    loop.tick()
    assert loop.state() == UP
    assert 'pitwall_worker_up{loop="slot-0"} 1.0' in h.render().decode()


def test_a_failing_loop_backs_off_bounded_then_gives_up() -> None:
    loop = Loop("recovery", stuck_after_s=60, give_up_after_s=0.3)
    delays = [loop.failed(RuntimeError("a bug")) for _ in range(12)]
    assert delays[0] == 0.5 and max(d or 0 for d in delays) == BACKOFF_MAX_S
    assert loop.state() == RETRYING and loop.last_error == "RuntimeError: a bug"
    outage = Loop("slot-0", stuck_after_s=60, give_up_after_s=60)
    assert max(outage.failed(ConnectionError("down")) or 0 for _ in range(12)) == \
        OUTAGE_BACKOFF_MAX_S  # a dependency that is back is used within seconds
    time.sleep(0.35)
    assert loop.failed(RuntimeError("a bug")) is None  # failing too long: give up
    loop.ok()
    assert loop.state() == UP and loop.failures == 0


def test_run_guarded_survives_errors_and_marks_a_loop_that_gave_up_dead() -> None:
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("Redis is restarting")

    stop = threading.Event()
    loop = Loop("slot-0", stuck_after_s=60, give_up_after_s=60)
    runner = threading.Thread(target=run_guarded, args=(loop, step, stop))
    runner.start()
    deadline = time.monotonic() + 10
    while len(calls) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stop.set()
    runner.join(5)
    assert loop.state() == UP and loop.failures == 0  # it recovered by itself

    doomed = Loop("slot-1", stuck_after_s=60, give_up_after_s=0.0)
    run_guarded(doomed, lambda: 1 / 0, threading.Event())
    assert doomed.state() == DEAD and "ZeroDivisionError" in str(doomed.dead)


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    tmp_path.chmod(0o755)
    return Stack.from_config(load_config(environ={}, data_dir=tmp_path / "data",
                                          sandbox="gvisor"))


def test_the_embedded_servers_healthz_reports_its_worker_loops(stack: Stack) -> None:
    server = EmbeddedServer(stack, workers=1).start()
    try:
        body = requests.get(f"{server.url}/healthz", timeout=10).json()
        assert body["loops"] == {"worker-0": "up", "recovery": "up"}
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        assert 'pitwall_worker_up{loop="worker-0"} 1.0' in metrics
        server.health.loop("worker-0").died("test: the thread ended")
        res = requests.get(f"{server.url}/healthz", timeout=10)
        assert res.status_code == 503 and "Retry-After" in res.headers
        assert res.json()["error"] == "worker_loop_failing"
        assert "worker-0 dead: test: the thread ended" in res.json()["message"]
        assert 'pitwall_worker_up{loop="worker-0"} 0.0' in requests.get(
            f"{server.url}/metrics", timeout=10).text
    finally:
        server.stop()


def test_one_embedded_server_per_data_dir(stack: Stack) -> None:
    first = EmbeddedServer(stack, workers=1).start()
    try:
        with pytest.raises(DataDirInUseError, match=f"runs the jobs of .* at {first.url}"):
            EmbeddedServer(stack, workers=1).start()
        EmbeddedServer(stack, workers=0).start().stop()  # an API alone runs no jobs: allowed
    finally:
        first.stop()
    again = EmbeddedServer(stack, workers=1).start()  # the lock went with the first
    again.stop()
