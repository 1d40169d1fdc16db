"""``pitwall worker``: a process of N worker slots, a recovery loop, graceful shutdown.

Slots are threads (the heavy work runs in the sandbox process and in NumPy/Polars, both
outside the GIL). The default number of slots fits the machine: one per CPU, but no
more than the memory holds at the default sandbox limit.

On SIGTERM (or SIGINT) the process stops claiming, lets the running jobs finish for
``grace_s``, then kills the sandboxes still running and hands their jobs back: each
goes RUNNING → PENDING through the recovery path and is enqueued again, so another
worker runs it from the start. A SIGKILL skips all this; the recovery loop of any other
worker process then takes the job back once its heartbeat is ``stale_after_s`` old.

Batch work yields the CPU to the API: ``pitwall worker`` raises its nice value (default
:data:`DEFAULT_NICE`) before it starts anything, so its slots and every sandbox they
start run at a lower CPU priority than an API process on the same host.

Never half alive (docs/architecture.md §1.5): every loop survives its failures
(:mod:`.health`), ``--health-port`` serves ``/healthz`` and ``pitwall_worker_up{loop=…}``,
and a loop that is dead or stuck ends the process the way SIGTERM does, but with exit
status 1, so that its supervisor starts a fresh one. The recovery loop's first pass is the
start-up recovery: a predecessor's jobs on this host are taken back at once (its
process is gone), and what it left of its sandboxes is removed on every pass.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from types import FrameType

from pitwall_executor.config import Config
from pitwall_executor.jobs.redis_queue import RedisQueue
from pitwall_executor.orchestration.health import (
    GIVE_UP_AFTER_S,
    STUCK_AFTER_S,
    Health,
    serve_health,
)
from pitwall_executor.orchestration.recovery import RecoveryLoop
from pitwall_executor.orchestration.worker import Worker
from pitwall_executor.sandbox import reap_orphans
from pitwall_executor.stack import Stack

log = logging.getLogger(__name__)
HAND_BACK_WAIT_S = 30.0  # after the grace period: how long a killed run may take to return
DEFAULT_NICE = 10  # workers and their sandboxes: below the API's CPU priority (nice 0)


@dataclass(frozen=True)
class WorkerOptions:
    """How one worker process runs."""

    slots: int
    grace_s: float
    recovery: bool = True
    recovery_interval_s: float | None = None
    name: str | None = None
    nice: int = 0  # applied by serve() (the CLI), before any thread or sandbox starts
    health_port: int | None = None  # serve /healthz and /metrics here (0: a free port)
    health_host: str = "0.0.0.0"
    stuck_after_s: float = STUCK_AFTER_S
    give_up_after_s: float = GIVE_UP_AFTER_S


def auto_slots(config: Config) -> int:
    """One slot per CPU this process may use, capped by memory / ``limits.memory_mb``."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, _memory_mb() // config.limits.memory_mb))


def lower_cpu_priority(nice: int) -> int:
    """Raise the calling thread's nice value to ``nice`` (never lower it); return it.

    On Linux the nice value belongs to a thread and is inherited by the threads and
    processes it starts: called first thing in a process it covers the whole process;
    called in a worker thread (``pitwall serve``) it covers that thread and its
    sandboxes, not the API's thread. Elsewhere it applies to the whole process.
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, 0, min(nice, 19))
    return os.getpriority(os.PRIO_PROCESS, 0)


def _memory_mb() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 4096


class WorkerProcess:
    """The slots and the recovery loop of one ``pitwall worker`` process."""

    def __init__(self, stack: Stack, options: WorkerOptions) -> None:
        self.stack = stack
        self.options = options
        self.stop_claiming = threading.Event()
        self.stopped = threading.Event()
        base = options.name or f"{os.uname().nodename}:{os.getpid()}"
        publish = stack.queue.publish if isinstance(stack.queue, RedisQueue) else None
        self.health = Health(stuck_after_s=options.stuck_after_s,
                             give_up_after_s=options.give_up_after_s)
        self.workers = [Worker(stack, f"{base}:{i}", publish=publish,
                               loop=self.health.loop(f"slot-{i}"))
                        for i in range(options.slots)]
        self._threads: list[threading.Thread] = []
        self.health_server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        """Start the slots and (unless disabled) the recovery loop."""
        try:  # built now, not at the first job: it destroys sandboxes a killed worker left
            _ = self.stack.backend
        except Exception:  # each job then fails with the backend's own message
            log.exception("the sandbox backend could not be started")
        for worker in self.workers:
            t = threading.Thread(target=worker.run_forever, args=(self.stop_claiming,),
                                 name=f"slot-{worker.name}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.options.recovery:
            cfg = self.stack.config
            loop = RecoveryLoop(self.stack.store, self.stack.queue,
                                stale_after_s=cfg.stale_after_s, max_attempts=cfg.max_attempts,
                                interval_s=self.options.recovery_interval_s,
                                artifacts=self.stack.artifacts, reap=self._reap,
                                loop=self.health.loop("recovery"))
            if isinstance(self.stack.queue, RedisQueue):  # Redis lost its data: reconcile now
                self.stack.queue.on_reset.append(loop.wake)
            threading.Thread(target=loop.run, args=(self.stopped,), name="recovery",
                             daemon=True).start()

    def _reap(self) -> None:
        reaped = reap_orphans(self.stack.config)
        if reaped:
            log.warning("removed what dead workers of this host left: %s", reaped)

    def shutdown(self) -> None:
        """Stop claiming; finish within the grace period, else hand the jobs back."""
        self.stop_claiming.set()
        deadline = time.monotonic() + self.options.grace_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        busy = [w for w in self.workers if w.busy]
        if busy:
            log.warning("grace period of %.0f s is over; handing %d job(s) back",
                        self.options.grace_s, len(busy))
        for worker in self.workers:
            worker.hand_back()
        for t in self._threads:
            t.join(HAND_BACK_WAIT_S)
        self.stopped.set()

    def serve(self) -> int:
        """Run until SIGTERM or SIGINT, then shut down gracefully: exit status 0. A loop
        that died or is stuck ends the process the same way: exit status 1."""
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.stop_claiming.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        nice = lower_cpu_priority(self.options.nice)
        if self.options.health_port is not None:
            self.health_server = serve_health(self.health, self.options.health_port,
                                              self.options.health_host)
            log.info("health on http://%s:%d/healthz", *self.health_server.server_address[:2])
        self.start()
        log.info("worker %s: %d slot(s), recovery %s, nice %d", os.getpid(), len(self.workers),
                 "on" if self.options.recovery else "off", nice)
        status = 0
        while not self.stop_claiming.wait(0.5):
            failing = self.health.failing()
            if failing:
                log.critical("stopping so that a supervisor restarts this worker: %s",
                             "; ".join(f"{name} {why}" for name, why in failing.items()))
                status = 1
                break
        self.shutdown()
        self.stack.store.close()
        if self.health_server is not None:
            self.health_server.shutdown()
        return status
