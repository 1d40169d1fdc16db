"""The liveness of a worker process's loops: each survives its failures or says it cannot.

Every long-running loop (a worker slot, the recovery loop) runs under :func:`run_guarded`:
an exception from the queue, the database or the sandbox is logged and the pass retried
after a bounded, growing backoff, never left to kill the thread. Each loop reports to its
:class:`Loop`: a pass made (``tick``), a pass that worked (``ok``), a failure. From those
:class:`Health` tells, per loop, ``up``, ``retrying`` (failing, backing off), ``stuck``
(no pass for ``stuck_after_s``: a call hangs) or ``dead`` (its thread ended, or it
failed for ``give_up_after_s`` and gave up). ``/healthz`` answers 503 and
``pitwall_worker_up{loop=…}`` is 0 for a stuck or dead loop, and ``pitwall worker``
then ends with a non-zero exit so its supervisor restarts it (docs/architecture.md §1.5):
a process is never left half alive.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pitwall_executor.jobs.redis_queue import queue_unreachable
from pitwall_executor.jobs.store import database_unreachable

log = logging.getLogger(__name__)

UP, RETRYING, STUCK, DEAD = "up", "retrying", "stuck", "dead"
BACKOFF_MIN_S = 0.5
# An outage is retried often (a dependency that is back must be used within seconds);
# anything else, a bug, slowly enough not to flood the log.
OUTAGE_BACKOFF_MAX_S = 2.0
BACKOFF_MAX_S = 30.0
LOG_EVERY_S = 30.0  # a loop failing in a row says so again at most this often
STUCK_AFTER_S = 120.0  # no pass this long: a call hangs (every pass takes a few seconds)
GIVE_UP_AFTER_S = 600.0  # failing this long: a restart of the process may do better


def is_outage(exc: BaseException) -> bool:
    """A dependency could not be reached (Redis, the database): expected, no traceback."""
    return database_unreachable(exc) or queue_unreachable(exc)


class Loop:
    """What one loop reported: its last pass, its failures, whether it gave up."""

    def __init__(self, name: str, *, stuck_after_s: float, give_up_after_s: float) -> None:
        self.name = name
        self.stuck_after_s = stuck_after_s
        self.give_up_after_s = give_up_after_s
        self._lock = threading.Lock()
        self._last_pass = time.monotonic()
        self._failing_since: float | None = None
        self.failures = 0  # in a row
        self.last_error: str | None = None
        self.dead: str | None = None  # why it ended

    def tick(self) -> None:
        """The loop made a pass (it is not stuck), whether or not it worked."""
        with self._lock:
            self._last_pass = time.monotonic()

    def ok(self) -> None:
        """A pass worked: the failures in a row are over."""
        with self._lock:
            self._last_pass = time.monotonic()
            self._failing_since, self.failures, self.last_error = None, 0, None

    def failed(self, exc: BaseException) -> float | None:
        """Record a failed pass; the seconds to wait before the next, or None: give up."""
        now = time.monotonic()
        with self._lock:
            self._last_pass = now
            if self._failing_since is None:
                self._failing_since = now
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"[:500]
            if now - self._failing_since >= self.give_up_after_s:
                return None
            cap = OUTAGE_BACKOFF_MAX_S if is_outage(exc) else BACKOFF_MAX_S
            return min(cap, BACKOFF_MIN_S * 2.0 ** min(self.failures - 1, 16))

    def died(self, why: str) -> None:
        with self._lock:
            self.dead = why

    def state(self) -> str:
        with self._lock:
            if self.dead is not None:
                return DEAD
            if time.monotonic() - self._last_pass > self.stuck_after_s:
                return STUCK
            return RETRYING if self.failures else UP

    def silent_s(self) -> float:
        """Seconds since the loop's last pass."""
        with self._lock:
            return time.monotonic() - self._last_pass


class Health:
    """The loops of one process, as ``/healthz`` and Prometheus report them."""

    def __init__(self, *, stuck_after_s: float = STUCK_AFTER_S,
                 give_up_after_s: float = GIVE_UP_AFTER_S) -> None:
        self.stuck_after_s = stuck_after_s
        self.give_up_after_s = give_up_after_s
        self.loops: dict[str, Loop] = {}

    def loop(self, name: str) -> Loop:
        """The loop called ``name``, registered on first use."""
        if name not in self.loops:
            self.loops[name] = Loop(name, stuck_after_s=self.stuck_after_s,
                                    give_up_after_s=self.give_up_after_s)
        return self.loops[name]

    def states(self) -> dict[str, str]:
        return {name: loop.state() for name, loop in self.loops.items()}

    def failing(self) -> dict[str, str]:
        """The loops that are stuck or dead, with why: what restarting the process fixes."""
        out = {}
        for name, loop in self.loops.items():
            state = loop.state()
            if state == DEAD:
                out[name] = f"dead: {loop.dead}"
            elif state == STUCK:
                out[name] = f"stuck: no pass for {loop.silent_s():.0f} s"
        return out

    def report(self) -> dict[str, Any]:
        """The JSON body of ``/healthz``."""
        return {"status": "failing" if self.failing() else "ok",
                "loops": {name: {"state": loop.state(), "failures": loop.failures,
                                 "last_error": loop.last_error, "dead": loop.dead}
                          for name, loop in self.loops.items()}}

    def render(self) -> bytes:
        """The Prometheus text of the loops: ``pitwall_worker_up`` and friends."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_LoopCollector(self))
        return generate_latest(registry)


class _LoopCollector(Collector):
    def __init__(self, health: Health) -> None:
        self.health = health

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("pitwall_worker_up", "Whether a worker loop is running "
                               "(0: stuck or dead; the process should be restarted).",
                               labels=["loop"])
        failing = GaugeMetricFamily("pitwall_worker_loop_failures",
                                    "Failed passes of a worker loop in a row.", labels=["loop"])
        silent = GaugeMetricFamily("pitwall_worker_loop_silent_seconds",
                                   "Seconds since a worker loop's last pass.", labels=["loop"])
        for name, loop in self.health.loops.items():
            up.add_metric([name], 0 if loop.state() in (STUCK, DEAD) else 1)
            failing.add_metric([name], loop.failures)
            silent.add_metric([name], loop.silent_s())
        yield from (up, failing, silent)


def run_guarded(loop: Loop, step: Callable[[], object], stop: threading.Event,
                wake: threading.Event | None = None, every_s: float = 0.0) -> None:
    """Call ``step`` until ``stop``, ``every_s`` apart (or when ``wake`` is set), surviving
    every exception with a bounded backoff; give up (mark the loop dead) only after it
    failed for ``give_up_after_s``."""
    wait = wake if wake is not None else stop
    said = -math.inf
    try:
        while not stop.is_set():
            try:
                step()
            except Exception as exc:
                delay = loop.failed(exc)
                if delay is None:
                    log.critical("%s has failed for %.0f s in a row (last: %s); giving up so "
                                 "that the process is restarted", loop.name,
                                 loop.give_up_after_s, loop.last_error)
                    loop.died(f"failed for {loop.give_up_after_s:.0f} s: {loop.last_error}")
                    return
                if loop.failures == 1 or time.monotonic() - said >= LOG_EVERY_S:
                    said = time.monotonic()
                    # An outage is expected and said in one line; anything else is a bug.
                    log.warning("%s failed (%s; %d in a row); retrying in %.1f s", loop.name,
                                loop.last_error, loop.failures, delay,
                                exc_info=not is_outage(exc) and loop.failures == 1)
                _pause(wait, stop, delay)
                continue
            if loop.failures:
                log.info("%s works again after %d failed passes", loop.name, loop.failures)
            loop.ok()
            if every_s > 0:
                _pause(wait, stop, every_s)
    except BaseException as exc:  # not an Exception: the thread ends, say so
        loop.died(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if not stop.is_set() and loop.dead is None:
            loop.died("the loop returned")


def _pause(wait: threading.Event, stop: threading.Event, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
        if wait.wait(min(left, 0.25)) and wait is not stop:
            wait.clear()
            return


def serve_health(health: Health, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve ``GET /healthz`` (200 or 503, JSON) and ``GET /metrics`` on ``host:port`` from
    a daemon thread; port 0 picks a free one (``server.server_address``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] == "/healthz":
                report = health.report()
                body = json.dumps(report).encode()
                status, kind = (200 if report["status"] == "ok" else 503), "application/json"
            elif self.path.split("?")[0] == "/metrics":
                body, status, kind = health.render(), 200, CONTENT_TYPE_PLAIN_0_0_4
            else:
                body, status, kind = b'{"error": "not_found"}', 404, "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes every few seconds: not worth a line each

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


__all__ = ["DEAD", "RETRYING", "STUCK", "UP", "Health", "Loop", "is_outage", "run_guarded",
           "serve_health"]
