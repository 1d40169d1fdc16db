"""Which worker process owns a sandbox or a job's work dir, so others can clean up after it.

A worker killed with SIGKILL cannot clean up: its sandbox's supervisor
(:mod:`.supervisor`) destroys the sandbox, but what the worker wrote (the job's work dir
with its bars, a warm pool's dirs) and anything whose supervisor died too stay behind.
Every such thing is therefore marked with its owner: this host, the worker's pid and the
pid's start time (``/proc/<pid>/stat`` field 22, so a recycled pid is not mistaken for
the owner), in its name (a runsc container id, a pool dir), a Docker label, or a
:data:`MARKER` file in the dir. :func:`pitwall_executor.sandbox.reap_orphans` removes
what a dead owner of this host left; a live owner's things are never touched.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

_TOKEN = re.compile(r"^(\d+)-(\d+)$")
#: The file in a work dir that names its owner (``<host> <pid>-<start>``).
MARKER = ".owner"


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


def named(name: str, prefix: str) -> Owner | None:
    """The owner a name carries right after ``prefix``: ``<prefix><pid>-<start>-<rest>``."""
    if not name.startswith(prefix):
        return None
    parts = name[len(prefix):].split("-", 2)
    return Owner.parse(f"{parts[0]}-{parts[1]}") if len(parts) == 3 and parts[2] else None


def mark(directory: Path) -> None:
    """Name this process, on this host, the owner of ``directory`` (a job's work dir)."""
    (directory / MARKER).write_text(f"{host()} {current().token}\n")


def marked(directory: Path) -> tuple[str, Owner] | None:
    """The host and owner :func:`mark` recorded in ``directory``; None if unmarked."""
    try:
        host_name, _, token = (directory / MARKER).read_text().strip().partition(" ")
    except OSError:
        return None
    who = Owner.parse(token)
    return (host_name, who) if who is not None else None
