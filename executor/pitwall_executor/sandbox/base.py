"""The sandbox contract (docs/architecture.md §4 ``SandboxBackend``, §5): what to run, what
came back.

A backend runs one argv in a fresh sandbox per job, never reused, with the given
read-only mounts and limits, enforces the wall-clock timeout from outside, and returns
bounded stdout and stderr. Everything in a :class:`SandboxOutcome` came from untrusted
code: parse it with limits (``pitwall.frames``), never unpickle it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol, Self, runtime_checkable

from pitwall.errors import SandboxError
from pitwall.models import Limits
from pitwall_executor.sandbox.capture import HeadBuffer, HeadTailBuffer, StreamReader

#: ``argv[0]`` meaning "the backend's Python interpreter" (its path differs per backend).
PYTHON = "python"
#: Where the job's directories appear inside the sandbox.
JOB_ROOT = "/job"
#: The only writable place inside the sandbox; also ``HOME`` and ``TMPDIR``.
SCRATCH = "/scratch"
#: Exit code of ``pitwall.sandbox.runner`` when the strategy raised.
STRATEGY_FAILED_EXIT = 3

#: Targets a job may not mount over: the interpreter, the system and the scratch dir.
RESERVED_TARGETS = ("/", "/usr", "/opt", "/proc", "/dev", "/etc", "/bin", "/lib", "/lib64",
                    "/sbin", SCRATCH, "/tmp")


@dataclass(frozen=True)
class Mount:
    """A host directory or file shown inside the sandbox at ``target``."""

    source: Path
    target: str
    readonly: bool = True

    def __post_init__(self) -> None:
        target = PurePosixPath(self.target)
        if not target.is_absolute() or ".." in target.parts:
            raise SandboxError(
                f"mount target {self.target!r} must be an absolute path without '..'"
            )
        if str(target) in RESERVED_TARGETS:
            raise SandboxError(f"mount target {self.target!r} is reserved; mount under {JOB_ROOT}")


@dataclass(frozen=True)
class SandboxRequest:
    """One job's run: ``argv`` (``argv[0] == PYTHON`` for the backend's interpreter)."""

    job_id: str
    argv: tuple[str, ...]
    mounts: tuple[Mount, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    cwd: str = SCRATCH

    def __post_init__(self) -> None:
        if not self.job_id or not self.argv:
            raise SandboxError("a sandbox request needs a job id and a non-empty argv")


@dataclass(frozen=True)
class SandboxOutcome:
    """What a run produced. ``stdout``/``stderr`` are untrusted and already size-capped."""

    exit_code: int | None
    timed_out: bool
    cancelled: bool
    oom: bool | None  # None: the backend cannot tell
    stdout: bytes
    stdout_truncated: bool
    stderr: bytes
    stderr_truncated: bool
    duration_s: float
    start_s: float | None  # from run() to the first byte of output, if any
    backend_log: str = ""  # the runtime's own diagnostics when it failed

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.cancelled or self.oom)

    @property
    def reason(self) -> str:
        """One line for a job's ``reason``: why the run did not succeed."""
        if self.timed_out:
            return "the strategy ran past its time limit and was stopped"
        if self.cancelled:
            return "the run was cancelled"
        if self.oom:
            return "the strategy ran out of memory; use less or raise limits.memory_mb"
        lines = [ln for ln in self.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        if self.exit_code == 0:
            return ""
        last = lines[-1].strip() if lines else f"the sandbox exited with code {self.exit_code}"
        return last[:500]


@runtime_checkable
class SandboxBackend(Protocol):
    """Runs one request in a fresh sandbox; ``kill`` may be called from another thread."""

    name: str

    def run(self, request: SandboxRequest) -> SandboxOutcome: ...

    def kill(self, job_id: str) -> None: ...


class SandboxSession(Protocol):
    """A started sandbox with a live stdin/stdout channel (event mode, warm pool).

    ``stdin``/``stdout`` are the binary pipes of the sandboxed process; stderr is
    captured with the request's cap. ``wait`` enforces the wall-clock limit from outside
    and returns the same :class:`SandboxOutcome` as ``run`` (``stdout`` empty: the caller
    consumed it). ``kill`` may be called from any thread and ends the sandbox within 1 s.
    """

    stdin: BinaryIO
    stdout: BinaryIO

    def wait(self) -> SandboxOutcome: ...

    def kill(self) -> None: ...


class SessionEnd:
    """How a backend's session ends, shared by both backends: :meth:`wait` for the outcome
    its watchdog recorded, and the context manager that kills, waits and closes both
    pipes. A subclass sets ``stdin``, ``stdout``, ``_done``, ``_outcome`` and ``_what``
    (``"sandbox <id>"``, for the timeout message) and implements :meth:`kill`.
    """

    stdin: BinaryIO
    stdout: BinaryIO
    _done: threading.Event
    _outcome: SandboxOutcome | None
    _what: str
    _err: HeadTailBuffer  # the sandbox's stderr, as captured
    started: float  # time.monotonic() at start

    @property
    def first_stderr_at(self) -> float | None:
        """When the process first wrote to stderr (``time.monotonic()``), if it did."""
        raise NotImplementedError

    def collect(self, request: SandboxRequest) -> SandboxOutcome:
        """A one-shot run over this session: EOF on stdin at once, stdout captured with the
        request's cap, the outcome once it ended (``start_s``: to the first output)."""
        self.stdin.close()  # the runner reads nothing
        out = HeadBuffer(request.limits.output_mb * 1024 * 1024)
        reader = StreamReader(self.stdout, out)
        reader.start()
        outcome = self.wait()
        reader.join(timeout=5)
        first = [t for t in (reader.first_byte_at, self.first_stderr_at) if t is not None]
        return dataclasses.replace(
            outcome, stdout=out.getvalue(), stdout_truncated=out.truncated,
            start_s=(min(first) - self.started) if first else None,
        )

    def ended(self, *, exit_code: int | None, timed_out: bool, cancelled: bool, oom: bool | None,
              backend_log: str = "") -> SandboxOutcome:
        """The outcome of this session once its process ended: its stderr as captured,
        cancelled only when it did not time out, stdout left to the reader of the pipe
        (:meth:`collect` fills it for a one-shot run), ``start_s`` to the first stderr."""
        first = self.first_stderr_at
        return SandboxOutcome(
            exit_code=exit_code, timed_out=timed_out, cancelled=cancelled and not timed_out,
            oom=oom, stdout=b"", stdout_truncated=False,
            stderr=self._err.getvalue(), stderr_truncated=self._err.truncated,
            duration_s=time.monotonic() - self.started,
            start_s=(first - self.started) if first else None, backend_log=backend_log,
        )

    def kill(self) -> None:
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> SandboxOutcome:
        """Block until the sandbox has ended and been cleaned up; its outcome."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self._what} is still running")
        with contextlib.suppress(OSError):
            self.stdin.close()
        assert self._outcome is not None
        return self._outcome

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done.is_set():
            self.kill()
        self.wait()
        with contextlib.suppress(OSError):
            self.stdout.close()


class InteractiveBackend(SandboxBackend, Protocol):
    """A backend that can also hand out a live session instead of a finished run."""

    def start(self, request: SandboxRequest) -> SandboxSession: ...


def runner_request(
    job_id: str,
    job_dir: Path,
    limits: Limits,
    *,
    bundle_dir: Path | None = None,
    input_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
    channel: Path | None = None,
) -> SandboxRequest:
    """The request that runs ``pitwall.sandbox.runner`` over a job's host directories.

    ``bundle_dir`` (default ``job_dir/bundle``) holds the strategy files; ``input_dir``
    (default ``job_dir/input``) holds ``spec.json`` and ``bars.arrow``. Both are mounted
    read-only at ``/job/bundle`` and ``/job/input``; nothing else of ``job_dir`` is.
    ``channel``: a live session's lane dir (``pitwall.lane``), mounted read-write at
    ``/job/channel``; it must be root's with mode 0755 so the sandbox's user can only
    write the lane file the worker put there, never add one.
    """
    bundle_dir = bundle_dir or job_dir / "bundle"
    input_dir = input_dir or job_dir / "input"
    for label, path in (("bundle", bundle_dir), ("input", input_dir)):
        if not path.is_dir():
            raise SandboxError(f"the job's {label} dir {path} does not exist; write it first")
    lane = () if channel is None else (
        Mount(channel.resolve(), f"{JOB_ROOT}/channel", readonly=False),)
    return SandboxRequest(
        job_id=job_id,
        argv=(PYTHON, "-S", "-m", "pitwall.sandbox.runner", JOB_ROOT),
        mounts=(
            Mount(bundle_dir.resolve(), f"{JOB_ROOT}/bundle"),
            Mount(input_dir.resolve(), f"{JOB_ROOT}/input"),
            *lane,
        ),
        env=dict(env or {}),
        limits=limits,
    )


#: Environment every backend sets, whatever the request says (docs/architecture.md §5 determinism).
FIXED_ENV: Mapping[str, str] = {
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "TZ": "UTC",
    "LANG": "C.UTF-8",
}
