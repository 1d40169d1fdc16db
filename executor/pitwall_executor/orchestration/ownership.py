"""One embedded stack per data dir: the lock it holds, and how other processes find it.

An embedded stack (``pitwall serve``, or the JupyterLab server extension's) runs the jobs
of its data dir's database on an in-process queue. Two of them on one data dir would each
take the other's jobs for orphans; ``pitwall run`` beside one would run its job unseen by
the lab. So the stack that runs workers holds an exclusive ``flock`` on
``<data_dir>/embedded.lock`` for its lifetime (the kernel drops it when the process dies,
however it dies) and publishes its URL and a researcher token in
``<data_dir>/embedded.json`` (mode 0600: the data dir's owner may submit, as anyone who
can read its database already could). :func:`running_server` is how ``pitwall run`` and
the server extension find it (docs/architecture.md §7).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from pitwall.errors import PitwallError

LOCK_FILE = "embedded.lock"
INFO_FILE = "embedded.json"
START_WAIT_S = 30.0  # a stack that holds the lock publishes its URL within this
PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ServerInfo:
    """Where the embedded stack of a data dir listens, and a token it accepts."""

    url: str
    token: str
    pid: int


class DataDirInUseError(PitwallError):
    """Another embedded stack already runs the jobs of this data dir."""


class Ownership:
    """The lock of one data dir, held while an embedded stack runs its jobs."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self._fh: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the lock if no live stack holds it; False if one does."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.data_dir / LOCK_FILE, "a")  # noqa: SIM115 (held for the stack's life)
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return False
        self._fh = fh
        return True

    def publish(self, url: str, token: str) -> None:
        """Say where this stack listens (only the lock's holder may)."""
        assert self._fh is not None, "publish() without the lock"
        path = self.data_dir / INFO_FILE
        tmp = path.with_name(f".{INFO_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(ServerInfo(url, token, os.getpid())), fh)
        os.replace(tmp, path)

    def release(self) -> None:
        if self._fh is None:
            return
        with contextlib.suppress(FileNotFoundError):
            info = _read_info(self.data_dir)
            if info is not None and info.pid == os.getpid():
                (self.data_dir / INFO_FILE).unlink()
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
        self._fh = None


def held(data_dir: Path) -> bool:
    """Whether a live process holds the data dir's lock."""
    path = Path(data_dir) / LOCK_FILE
    try:
        fh = open(path)  # noqa: SIM115
    except FileNotFoundError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def running_server(data_dir: Path, *, wait_s: float = START_WAIT_S) -> ServerInfo | None:
    """The embedded stack that runs ``data_dir``'s jobs, once it answers; None if none.

    A stack that holds the lock but has not published its URL yet (starting) is waited
    for, up to ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    while held(data_dir):
        info = _read_info(data_dir)
        if info is not None and _pid_alive(info.pid) and _answers(info.url):
            return info
        if time.monotonic() > deadline:
            raise DataDirInUseError(
                f"another process holds {Path(data_dir) / LOCK_FILE} but its Backtest API "
                f"did not answer within {wait_s:.0f} s; check `pitwall serve` or JupyterLab "
                "on this data dir, or stop them and retry")
        time.sleep(0.2)
    return None


def _read_info(data_dir: Path) -> ServerInfo | None:
    try:
        raw = json.loads((Path(data_dir) / INFO_FILE).read_text())
        return ServerInfo(url=str(raw["url"]), token=str(raw["token"]), pid=int(raw["pid"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(url: str) -> bool:
    """Whether the API at ``url`` answers at all (a 503 while its database restarts too)."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with direct.open(f"{url}/healthz", timeout=PROBE_TIMEOUT_S):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
