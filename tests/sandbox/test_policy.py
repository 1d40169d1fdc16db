"""The sandbox policy against hostile code, on both backends (docs/architecture.md §5).

Every test runs on the gVisor backend (runsc from an OCI bundle) and on the Docker
backend (the engine, runtime runsc): one policy, proven the same way on both. Real
runtimes, never mocked, never skipped: without them these tests fail.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from sandbox_helpers import FAST, SMA, Backend, host_listener, make_job

from pitwall.frames import FrameKind, decode_error, decode_frames, decode_result
from pitwall.models import Limits
from pitwall_executor.sandbox.base import (
    PYTHON,
    Mount,
    SandboxOutcome,
    SandboxRequest,
    runner_request,
)
from pitwall_executor.sandbox.gvisor import GVisorBackend

pytestmark = pytest.mark.sandbox


def run_py(backend: Backend, code: str, *, limits: Limits = FAST,
           mounts: tuple[Mount, ...] = (), job_id: str = "t") -> SandboxOutcome:
    return backend.run(SandboxRequest(job_id, (PYTHON, "-S", "-c", code), mounts, {}, limits))


def test_no_network(sandbox: Backend) -> None:
    with host_listener() as (listener, targets):
        code = f"""
import json, socket
res = {{}}
for host, port in {targets!r}:
    try:
        socket.create_connection((host, port), timeout=2).close()
        res[host] = "connected"
    except OSError as e:
        res[host] = type(e).__name__
print(json.dumps(res))
"""
        out = run_py(sandbox, code)
        assert out.exit_code == 0, out.stderr
        results = json.loads(out.stdout)
        assert "connected" not in results.values(), results
        assert results["127.0.0.1"] == "ConnectionRefusedError"
        with pytest.raises(TimeoutError):
            listener.accept()


def test_filesystem_is_read_only_except_scratch(sandbox: Backend, tmp_path: Path) -> None:
    bundle, inputs = tmp_path / "bundle", tmp_path / "input"
    for d in (bundle, inputs):
        d.mkdir()
        (d / "f").write_text("x")
    code = """
import json, os
res = {}
for p in ["/x", "/job/bundle/x", "/job/bundle/f", "/job/input/x", "/job/channel/x", "/usr/x",
          "/tmp/x", "/opt/python/x", "/opt/pitwall/sdk/x", "/opt/pitwall/pycache/x", "/etc/x",
          "/proc/x", "/dev/shm/x", "/dev/x"]:
    try:
        open(p, "w").write("x")
        res[p] = "written"
    except OSError as e:
        res[p] = e.errno
open("/scratch/ok", "w").write("fine")
res["scratch"] = open("/scratch/ok").read()
try:
    with open("/scratch/big", "wb") as f:
        for _ in range(64):
            f.write(b"x" * (1 << 20))
    res["big"] = "written"
except OSError as e:
    res["big"] = e.errno
res["root"] = sorted(os.listdir("/"))
res["mounts"] = {l.split()[1]: l.split()[3].split(",")[0] for l in open("/proc/self/mounts")}
print(json.dumps(res))
"""
    out = run_py(sandbox, code,
                 mounts=(Mount(bundle, "/job/bundle"), Mount(inputs, "/job/input")))
    assert out.exit_code == 0, out.stderr
    res = json.loads(out.stdout)
    assert res.pop("scratch") == "fine"
    assert res.pop("big") in (27, 28)  # EFBIG (RLIMIT_FSIZE) or ENOSPC (tmpfs size), at 8 MB
    assert "root" not in res.pop("root")  # the host's / is not the sandbox's /
    # Read-only as mounted, not merely unwritable by uid 65534.
    mounts = res.pop("mounts")
    # /usr, /tmp and the bytecode are the image's root, not mounts of their own.
    read_only = ("/", "/job/bundle", "/job/input")
    assert {t: mounts[t] for t in read_only} == dict.fromkeys(read_only, "ro"), mounts
    assert not {"/usr", "/tmp", "/opt/pitwall/pycache"} & set(mounts), mounts
    assert mounts["/scratch"] == "rw"
    assert "written" not in res.values(), res
    assert (bundle / "f").read_text() == "x"
    assert sorted(p.name for p in bundle.iterdir()) == ["f"]


def test_timeout_kills_within_a_second(sandbox: Backend) -> None:
    limits = FAST.model_copy(update={"timeout_s": 2.0})
    out = run_py(sandbox, "import time; print('up', flush=True); time.sleep(60)", limits=limits)
    assert out.timed_out and not out.cancelled
    assert out.stdout == b"up\n"
    assert 2.0 <= out.duration_s < 3.0, out.duration_s


def test_kill_from_another_thread(sandbox: Backend) -> None:
    result: list[SandboxOutcome] = []
    worker = threading.Thread(target=lambda: result.append(
        run_py(sandbox, "import time\ntime.sleep(60)", job_id="to-cancel")))
    worker.start()
    time.sleep(1.5)
    asked = time.monotonic()
    sandbox.kill("to-cancel")
    worker.join(timeout=5)
    assert time.monotonic() - asked < 1.0
    assert result[0].cancelled and not result[0].timed_out and not result[0].ok


def test_exception_gives_traceback_and_nonzero_exit(sandbox: Backend) -> None:
    out = run_py(sandbox, "def f():\n    raise ValueError('boom: bad parameter')\nf()")
    assert out.exit_code == 1
    assert b"Traceback (most recent call last)" in out.stderr
    assert out.reason == "ValueError: boom: bad parameter"


def test_output_flood_is_capped(sandbox: Backend) -> None:
    limits = FAST.model_copy(update={"output_mb": 1, "log_kb": 64})
    code = """
import os
chunk = b"o" * (1 << 20)
for _ in range(50):
    os.write(1, chunk)
    os.write(2, chunk[:-10] + b"e" * 9 + b"\\n")
os.write(2, b"the last line\\n")
"""
    out = run_py(sandbox, code, limits=limits)
    assert out.exit_code == 0, out.stderr[-300:]
    assert len(out.stdout) == 1 << 20 and out.stdout_truncated
    assert out.stderr_truncated and len(out.stderr) < 64 * 1024 + 100
    assert out.stderr.endswith(b"the last line\n") and b"bytes cut" in out.stderr


def test_memory_bomb_is_contained(sandbox: Backend) -> None:
    code = """
hog = []
while True:
    hog.append(bytearray(16 << 20))
"""
    out = run_py(sandbox, code, limits=FAST.model_copy(update={"memory_mb": 128}))
    assert out.exit_code != 0 and out.oom is True, out
    assert "memory" in out.reason


def test_fork_bomb_is_contained(sandbox: Backend) -> None:
    code = """
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        n += 1
except OSError as e:
    print(n, e.errno, flush=True)
"""
    out = run_py(sandbox, code, limits=FAST.model_copy(update={"pids": 32}))
    assert out.exit_code == 0, out
    forked, errno = map(int, out.stdout.split())
    assert forked < 32 and errno == 11  # EAGAIN from RLIMIT_NPROC, enforced inside gVisor


def test_runs_as_unprivileged_user(sandbox: Backend) -> None:
    code = """
import ctypes, os
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
no_new_privs = ctypes.CDLL(None, use_errno=True).prctl(39, 0, 0, 0, 0)  # PR_GET_NO_NEW_PRIVS
print(os.getuid(), os.geteuid(), os.getgid(), status["CapEff"].strip(), status["CapBnd"].strip(),
      no_new_privs)
"""
    out = run_py(sandbox, code)
    assert out.stdout.split() == [b"65534"] * 3 + [b"0000000000000000"] * 2 + [b"1"], out


def test_host_environment_does_not_leak(sandbox: Backend,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PITWALL_FAKE_SECRET", "hunter2")
    out = run_py(sandbox, "import json, os; print(json.dumps(dict(os.environ)))")
    env = json.loads(out.stdout)
    assert "PITWALL_FAKE_SECRET" not in env and b"hunter2" not in out.stdout
    assert env["PYTHONHASHSEED"] == "0" and env["TZ"] == "UTC" and env["HOME"] == "/scratch"
    # The engine sets HOSTNAME (to the sandbox's own, not the host's); runsc does not.
    assert env.pop("HOSTNAME", "sandbox") == "sandbox"
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "PYTHONPATH", "LD_LIBRARY_PATH", "LANG",
                        "LC_CTYPE", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "TZ",
                        "PYTHONPYCACHEPREFIX"}


def test_imports_use_the_compiled_bytecode(sandbox: Backend) -> None:
    """Every module the runner imports loads from a .pyc: nothing is compiled per job."""
    code = "import pitwall.sandbox.runner, pitwall.strategy, polars, numpy"
    out = sandbox.run(SandboxRequest("pyc", (PYTHON, "-S", "-v", "-c", code),
                                     limits=FAST.model_copy(update={"log_kb": 65536})))
    assert out.exit_code == 0 and not out.stderr_truncated, out.reason
    lines = out.stderr.decode().splitlines()
    from_source = [ln for ln in lines if ln.startswith("# code object from") and ".pyc" not in ln]
    from_pyc = [ln for ln in lines if ln.startswith("# code object from") and ".pyc" in ln]
    assert from_source == [] and len(from_pyc) > 300
    assert all("/opt/pitwall/pycache/" in ln for ln in from_pyc)


def test_runner_round_trip(sandbox: Backend, tmp_path: Path) -> None:
    *_, bars = make_job(tmp_path, SMA, {"fast": 2, "slow": 5})
    out = sandbox.run(runner_request("sma", tmp_path, FAST))
    assert out.exit_code == 0, out.stderr.decode()
    assert b"computing 2 5" in out.stderr
    [frame] = decode_frames(out.stdout)
    assert frame.kind is FrameKind.RESULT
    got = pl.from_arrow(decode_result(frame.payload))
    namespace: dict[str, object] = {}
    exec(SMA, namespace)
    expected = namespace["sma_cross"](bars, fast=2, slow=5)  # type: ignore[operator]
    assert isinstance(got, pl.DataFrame)
    assert_frame_equal(got, expected)
    assert got["weight"].sum() > 0


def test_runner_reports_strategy_errors(sandbox: Backend, tmp_path: Path) -> None:
    broken = SMA.replace('print("computing", fast, slow)', "raise KeyError('close_px')")
    bundle, inputs, _ = make_job(tmp_path, broken, {})
    out = sandbox.run(runner_request("err", tmp_path, FAST, bundle_dir=bundle,
                                     input_dir=inputs))
    assert out.exit_code == 3
    assert out.reason == "KeyError: 'close_px'"
    [frame] = decode_frames(out.stdout)
    assert frame.kind is FrameKind.ERROR
    assert decode_error(frame.payload) == {"error": "KeyError", "message": "'close_px'"}


def test_the_sandbox_cgroup_has_the_batch_cpu_weight_and_quota(backend: GVisorBackend) -> None:
    """runsc applies the OCI CPU resources: a backtest yields to the API when both want a core."""
    from pitwall_executor.sandbox import oci, owner

    limits = FAST.model_copy(update={"cpus": 0.5})
    runner = threading.Thread(target=run_py, args=(backend, "import time; time.sleep(4)"),
                              kwargs={"limits": limits, "job_id": "cpu-weight"})
    runner.start()
    try:
        pattern = f"pitwall-{owner.current().token}-*"
        deadline = time.monotonic() + 20
        found: list[Path] = []
        while not found and time.monotonic() < deadline:
            found = [p for p in Path("/sys/fs/cgroup/cpu").glob(pattern)
                     if (p / "cpu.shares").exists()]
            time.sleep(0.05)
        assert found, "no cpu cgroup of the running sandbox appeared"
        shares = int((found[0] / "cpu.shares").read_text())
        quota = int((found[0] / "cpu.cfs_quota_us").read_text())
        period = int((found[0] / "cpu.cfs_period_us").read_text())
    finally:
        runner.join()
    assert shares == oci.SANDBOX_CPU_SHARES
    assert quota / period == pytest.approx(0.5)
