"""``LocalBackend``: the same argv as a plain subprocess — NO isolation, engine tests only.

It refuses to exist unless ``allow_unsandboxed=True`` is passed: strategy code run here
can read and write everything the worker can. Mount targets are emulated with symlinks
under a per-run temporary root, and argv items that name a mount target are rewritten.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from pitwall.errors import SandboxError
from pitwall_executor.sandbox.base import (
    FIXED_ENV,
    PYTHON,
    SCRATCH,
    SandboxOutcome,
    SandboxRequest,
)
from pitwall_executor.sandbox.capture import HeadBuffer, HeadTailBuffer, StreamReader


class LocalBackend:
    """Runs requests unsandboxed on the host; for unit tests of the engine only."""

    name = "local"

    def __init__(self, *, allow_unsandboxed: bool = False) -> None:
        if allow_unsandboxed is not True:
            raise SandboxError(
                "the local backend runs strategy code without any sandbox; pass "
                "allow_unsandboxed=True (tests only) or use the gvisor backend"
            )
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()

    def _layout(self, request: SandboxRequest, root: Path) -> tuple[list[str], dict[str, str]]:
        for m in request.mounts:
            link = root / m.target.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(m.source.resolve())
        scratch = root / SCRATCH.lstrip("/")
        scratch.mkdir()
        argv = [sys.executable if request.argv[0] == PYTHON else request.argv[0]]
        for arg in request.argv[1:]:
            mapped = root / arg.lstrip("/")
            argv.append(str(mapped) if arg.startswith("/") and mapped.exists() else arg)
        sdk = Path(__file__).resolve().parents[3] / "sdk"
        env = {"PATH": os.defpath, "HOME": str(scratch), "TMPDIR": str(scratch),
               "PYTHONPATH": str(sdk), **request.env, **FIXED_ENV}
        return argv, env

    def run(self, request: SandboxRequest) -> SandboxOutcome:
        limits = request.limits
        started = time.monotonic()
        root = Path(tempfile.mkdtemp(prefix="pitwall-local-"))
        out, err = HeadBuffer(limits.output_mb * 1024 * 1024), HeadTailBuffer(limits.log_kb * 1024)
        timed_out = False
        try:
            argv, env = self._layout(request, root)
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, cwd=root / "scratch",
                                    start_new_session=True)
            with self._lock:
                self._procs[request.job_id] = proc
            assert proc.stdout is not None and proc.stderr is not None
            readers = [StreamReader(proc.stdout, out), StreamReader(proc.stderr, err)]
            for r in readers:
                r.start()
            try:
                proc.wait(timeout=limits.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _killpg(proc)
            for r in readers:
                r.join(timeout=5)
        finally:
            with self._lock:
                self._procs.pop(request.job_id, None)
                cancelled = request.job_id in self._cancelled
                self._cancelled.discard(request.job_id)
            shutil.rmtree(root, ignore_errors=True)
        first = [r.first_byte_at for r in readers if r.first_byte_at is not None]
        return SandboxOutcome(
            exit_code=proc.returncode, timed_out=timed_out, cancelled=cancelled and not timed_out,
            oom=None, stdout=out.getvalue(), stdout_truncated=out.truncated,
            stderr=err.getvalue(), stderr_truncated=err.truncated,
            duration_s=time.monotonic() - started,
            start_s=(min(first) - started) if first else None,
        )

    def kill(self, job_id: str) -> None:
        with self._lock:
            proc = self._procs.get(job_id)
            if proc is not None:
                self._cancelled.add(job_id)
        if proc is not None:
            _killpg(proc)


def _killpg(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
