"""Which worker process owns a sandbox, so a restarted worker can destroy a dead one's.

A worker killed with SIGKILL cannot clean up: its sandboxes keep running (``runsc run``
and the Docker engine do not depend on it) with nobody enforcing their wall clock. Every
sandbox is therefore marked with its owner: this host, the worker's pid and the pid's
start time (``/proc/<pid>/stat`` field 22, so a recycled pid is not mistaken for the
owner). A backend starting up destroys the sandboxes of its state dir (gVisor) or of its
engine (Docker) whose owner on this host is gone; a live owner's are never touched.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

_TOKEN = re.compile(r"^(\d+)-(\d+)$")


@dataclass(frozen=True)
class Owner:
    """A process on this host: ``pid`` and its start time in clock ticks since boot."""

    pid: int
    start: int

    @property
    def token(self) -> str:
        """``<pid>-<start>``: safe in a container name, a runsc id and a Docker label."""
        return f"{self.pid}-{self.start}"

    @classmethod
    def parse(cls, token: str) -> Owner | None:
        m = _TOKEN.match(token)
        return cls(int(m.group(1)), int(m.group(2))) if m else None

    def alive(self) -> bool:
        return _start_time(self.pid) == self.start


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2:].split()
    return int(fields[19])  # field 22 overall


@functools.cache
def _me(pid: int) -> Owner:
    start = _start_time(pid)
    assert start is not None
    return Owner(pid, start)


def current() -> Owner:
    """This process (re-read after a fork: a child is a different owner)."""
    return _me(os.getpid())


def host() -> str:
    return os.uname().nodename
