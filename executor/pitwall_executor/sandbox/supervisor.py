"""One supervisor process per sandbox: the sandbox ends with its worker, and at its wall clock.

A sandbox's processes do not depend on the worker that started them: ``runsc run`` puts
its gofer and Sentry in sessions of their own (a dead parent kills neither), and the
Docker engine keeps a container whatever happens to its client. The worker's watchdog
thread enforces the wall clock, but only while the worker runs: a worker killed with
SIGKILL, OOM-killed or stopped (SIGSTOP, a debugger, a frozen cgroup) would leave the
sandbox running past its limit, beside the retry on another worker
(docs/architecture.md §1.5: a sandbox never outlives the worker that started it).

So before a backend starts a sandbox it starts this module as a tiny process of its own
(the stdlib only, ``python -I -S``: a few MB and ~30 ms of CPU), in its own session, with
the read end of a pipe whose only write end the worker keeps. The kernel closes that end
when the worker dies, however it dies; the supervisor then reads EOF and destroys the
sandbox: its processes (SIGKILL, by container id and by cgroup), runsc's state, its
cgroups and its bundle dir (gVisor) or the container (Docker, a forced removal through
the engine's unix socket). The worker also sends the wall clock (``arm <deadline>``, a
``CLOCK_MONOTONIC`` time, the same in every process of the host): if the worker has not
ended the sandbox :data:`GRACE_S` after it (normally its watchdog acts at the deadline
itself), the supervisor destroys it, so a stopped worker cannot stretch a job's limit.
When the worker has ended and cleaned up the sandbox itself it sends ``done`` and the
supervisor exits without touching anything.

The destroy functions are also what :mod:`.orphans` uses on what dead workers left.
This file imports nothing but the standard library: it runs as a script, by path.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

#: After the wall clock: the worker's own watchdog acts at the deadline and needs about a
#: second to end a sandbox; the supervisor steps in only if it has not.
GRACE_S = 2.0
_CGROUP_ROOT = Path("/sys/fs/cgroup")
_RUNSC_TIMEOUT_S = 10.0


# -- destroying one sandbox ------------------------------------------------------------

def runsc_processes(cid: str) -> list[int]:
    """Pids of the live processes of runsc container ``cid``: ``runsc run``/``restore``,
    its gofer and Sentry (all name the id on their command line; zombies excluded)."""
    found = []
    needle = cid.encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in cmd and state != b"Z" and os.path.basename(
                cmd.split(b"\0", 1)[0]).startswith(b"runsc"):
            found.append(int(proc.name))
    return found


def cgroup_dirs(name: str) -> list[Path]:
    """The cgroups called ``name`` in every hierarchy (runsc's own and our memory group)."""
    return [p for p in _CGROUP_ROOT.glob(f"*/{name}") if p.is_dir()]


def _kill_tasks(cgroup: Path) -> None:
    with contextlib.suppress(OSError):
        tasks = (cgroup / "cgroup.procs").read_text().split()
        for task in tasks:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(task), signal.SIGKILL)


def remove_cgroups(name: str, *, tries: int = 50) -> list[Path]:
    """SIGKILL what is left in the cgroups called ``name``, then remove them; those removed."""
    removed = []
    for path in cgroup_dirs(name):
        for _ in range(tries):  # a killed task may take a moment to leave
            _kill_tasks(path)
            try:
                path.rmdir()
                removed.append(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.02)
    return removed


def _runsc_state(root: Path, cid: str) -> bool:
    return root.is_dir() and any(root.glob(f"*{cid}*"))


def destroy_runsc(runsc: str, root: Path, cid: str, bundle: Path | None = None) -> None:
    """End runsc container ``cid`` (state under ``root``) and remove all of it on the host.

    SIGKILL first (``runsc run`` included, so it cannot go on creating the sandbox), then
    ``runsc delete --force`` for its state and runsc's cgroups, until nothing of it runs;
    then what is left of its cgroups, then ``bundle`` (its OCI bundle and log)."""
    for _ in range(20):
        for pid in runsc_processes(cid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for path in cgroup_dirs(cid):
            _kill_tasks(path)
        if _runsc_state(root, cid) and shutil.which(runsc) is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run([runsc, "--root", str(root), "delete", "--force", cid],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=_RUNSC_TIMEOUT_S,
                               check=False)
        if not runsc_processes(cid) and not _runsc_state(root, cid):
            break
        time.sleep(0.05)
    for path in root.glob(f"*{cid}*") if root.is_dir() else ():
        with contextlib.suppress(OSError):  # runsc itself is missing or failed: its files
            path.unlink()
    remove_cgroups(cid)
    if bundle is not None:
        shutil.rmtree(bundle, ignore_errors=True)


def destroy_container(docker_socket: str, name: str) -> bool:
    """Force-remove container ``name`` through the engine's API; True when it is gone.

    One HTTP/1.0 request on the unix socket, by hand: ``http.client`` would double the
    memory of every supervisor for this one call."""
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"not a container name: {name!r}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30.0)
        sock.connect(docker_socket)
        sock.sendall(f"DELETE /containers/{name}?force=1&v=1 HTTP/1.0\r\n"
                     "Host: docker\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head and (chunk := sock.recv(256)):
            head += chunk
    status = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
    return status in (b"204", b"404")  # 409: another removal is under way


# -- the worker's side ---------------------------------------------------------------------

class Supervisor:
    """The worker's end of one sandbox's supervisor process.

    Start it before the sandbox (a worker that dies in between leaves nothing unwatched);
    :meth:`arm` sets or moves the wall clock; :meth:`release` once the worker has ended
    and cleaned up the sandbox itself. Thread-safe.
    """

    def __init__(self, target: list[str], *, what: str, deadline: float = math.inf) -> None:
        read, self._write = os.pipe()
        self._lock = threading.Lock()
        try:
            # Its own session: a signal to the worker's process group does not reach it.
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", __file__, str(read), what, repr(deadline),
                 *target],
                pass_fds=(read,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True)
        except BaseException:
            os.close(self._write)
            raise
        finally:
            os.close(read)

    @classmethod
    def for_runsc(cls, runsc: str, root: Path, cid: str, bundle: Path, *,
                  deadline: float = math.inf) -> Supervisor:
        return cls(["runsc", runsc, str(root), cid, str(bundle)], what=cid, deadline=deadline)

    @classmethod
    def for_container(cls, docker_socket: str, name: str, *,
                      deadline: float = math.inf) -> Supervisor:
        return cls(["docker", docker_socket, name], what=name, deadline=deadline)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def arm(self, deadline: float) -> None:
        """Destroy the sandbox :data:`GRACE_S` after ``deadline`` (``time.monotonic()``;
        ``math.inf``: no wall clock) unless released first."""
        self._send(f"arm {deadline!r}\n")

    def release(self) -> None:
        """The worker ended the sandbox itself: the supervisor exits, touching nothing."""
        self._send("done\n")
        with self._lock:
            if self._write >= 0:
                os.close(self._write)
                self._write = -1
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)

    def _send(self, line: str) -> None:
        with self._lock:
            if self._write < 0:
                return
            with contextlib.suppress(OSError):  # it ended the sandbox already and left
                os.write(self._write, line.encode())


# -- the supervisor process ------------------------------------------------------------------

def _say(what: str, why: str) -> None:
    with contextlib.suppress(OSError):
        sys.stderr.write(f"pitwall sandbox supervisor: {why}; destroyed {what}\n")
        sys.stderr.flush()


def watch(fd: int, deadline: float) -> str | None:
    """Read the worker's pipe until it says ``done`` (None) or must be acted on: the
    worker died (EOF) or the wall clock plus the grace passed; then the reason."""
    pending = b""
    while True:
        left = None if math.isinf(deadline) else max(0.0, deadline + GRACE_S - time.monotonic())
        if not select.select([fd], [], [], left)[0]:
            return "the wall clock passed and the worker did not end the sandbox"
        chunk = os.read(fd, 4096)
        if not chunk:
            return "its worker died"
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line == b"done":
                return None
            if line.startswith(b"arm "):
                deadline = float(line[4:])


def main(argv: list[str]) -> int:
    fd, what, deadline, kind, *target = argv
    # Tied to the worker by the pipe alone: a terminal's ^C, a hang-up or a service
    # manager's SIGTERM to the worker's group must not end the supervisor first.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    why = watch(int(fd), float(deadline))
    if why is None:
        return 0
    if kind == "runsc":
        runsc, root, cid, bundle = target
        destroy_runsc(runsc, Path(root), cid, Path(bundle))
    else:
        docker_socket, name = target
        for _ in range(5):
            try:
                if destroy_container(docker_socket, name):
                    break
            except OSError:
                pass
            time.sleep(0.5)
    _say(what, why)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
