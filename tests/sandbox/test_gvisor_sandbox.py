"""The gVisor sandbox against hostile code, with the real runsc (DESIGN.md §5)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pitwall.channel import FrameKind, decode_error, decode_frames, decode_result
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

FAST = Limits(timeout_s=20, memory_mb=256, pids=64, scratch_mb=8, output_mb=4, log_kb=64)


def run_py(backend: GVisorBackend, code: str, *, limits: Limits = FAST,
           mounts: tuple[Mount, ...] = (), job_id: str = "t") -> SandboxOutcome:
    return backend.run(SandboxRequest(job_id, (PYTHON, "-S", "-c", code), mounts, {}, limits))


def host_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP connect sends nothing; it picks a route
            return str(s.getsockname()[0])
        except OSError:
            return None


def test_no_network(backend: GVisorBackend) -> None:
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        targets = [("127.0.0.1", port), ("1.1.1.1", 53)]
        if (ip := host_ip()) is not None:
            targets.append((ip, port))
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
        out = run_py(backend, code)
        assert out.exit_code == 0, out.stderr
        results = json.loads(out.stdout)
        assert "connected" not in results.values(), results
        assert results["127.0.0.1"] == "ConnectionRefusedError"
        with pytest.raises(TimeoutError):
            listener.accept()


def test_filesystem_is_read_only_except_scratch(backend: GVisorBackend, tmp_path: Path) -> None:
    bundle, inputs = tmp_path / "bundle", tmp_path / "input"
    for d in (bundle, inputs):
        d.mkdir()
        (d / "f").write_text("x")
    code = """
import json, os
res = {}
for p in ["/x", "/job/bundle/x", "/job/bundle/f", "/job/input/x", "/usr/x", "/tmp/x",
          "/opt/python/x", "/opt/pitwall/sdk/x", "/etc/x", "/proc/x"]:
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
print(json.dumps(res))
"""
    out = run_py(backend, code, mounts=(Mount(bundle, "/job/bundle"), Mount(inputs, "/job/input")))
    assert out.exit_code == 0, out.stderr
    res = json.loads(out.stdout)
    assert res.pop("scratch") == "fine"
    assert res.pop("big") in (27, 28)  # EFBIG (RLIMIT_FSIZE) or ENOSPC (tmpfs size), at 8 MB
    assert "root" not in res.pop("root")  # the host's / is not the sandbox's /
    assert "written" not in res.values(), res
    assert (bundle / "f").read_text() == "x"
    assert sorted(p.name for p in bundle.iterdir()) == ["f"]


def test_timeout_kills_within_a_second(backend: GVisorBackend) -> None:
    limits = FAST.model_copy(update={"timeout_s": 2.0})
    out = run_py(backend, "import time; print('up', flush=True); time.sleep(60)", limits=limits)
    assert out.timed_out and not out.cancelled
    assert out.stdout == b"up\n"
    assert 2.0 <= out.duration_s < 3.0, out.duration_s


def test_exception_gives_traceback_and_nonzero_exit(backend: GVisorBackend) -> None:
    out = run_py(backend, "def f():\n    raise ValueError('boom: bad parameter')\nf()")
    assert out.exit_code == 1
    assert b"Traceback (most recent call last)" in out.stderr
    assert out.reason == "ValueError: boom: bad parameter"


def test_output_flood_is_capped(backend: GVisorBackend) -> None:
    limits = FAST.model_copy(update={"output_mb": 1, "log_kb": 64})
    code = """
import os
chunk = b"o" * (1 << 20)
for _ in range(50):
    os.write(1, chunk)
    os.write(2, chunk[:-10] + b"e" * 9 + b"\\n")
os.write(2, b"the last line\\n")
"""
    out = run_py(backend, code, limits=limits)
    assert out.exit_code == 0, out.backend_log
    assert len(out.stdout) == 1 << 20 and out.stdout_truncated
    assert out.stderr_truncated and len(out.stderr) < 64 * 1024 + 100
    assert out.stderr.endswith(b"the last line\n") and b"bytes cut" in out.stderr


def test_memory_bomb_is_contained(backend: GVisorBackend) -> None:
    code = """
hog = []
while True:
    hog.append(bytearray(16 << 20))
"""
    out = run_py(backend, code, limits=FAST.model_copy(update={"memory_mb": 128}))
    assert out.exit_code != 0 and out.oom is True, out
    assert "memory" in out.reason


def test_fork_bomb_is_contained(backend: GVisorBackend) -> None:
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
    out = run_py(backend, code, limits=FAST.model_copy(update={"pids": 32}))
    assert out.exit_code == 0, out
    forked, errno = map(int, out.stdout.split())
    assert forked < 32 and errno == 11  # EAGAIN from RLIMIT_NPROC, enforced inside gVisor


def test_kill_from_another_thread(backend: GVisorBackend) -> None:
    result: list[SandboxOutcome] = []
    worker = threading.Thread(target=lambda: result.append(
        run_py(backend, "import time\ntime.sleep(60)", job_id="to-cancel")))
    worker.start()
    time.sleep(1.5)
    asked = time.monotonic()
    backend.kill("to-cancel")
    worker.join(timeout=5)
    assert time.monotonic() - asked < 1.0
    assert result[0].cancelled and not result[0].timed_out and not result[0].ok


def test_host_environment_does_not_leak(backend: GVisorBackend,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PITWALL_FAKE_SECRET", "hunter2")
    out = run_py(backend, "import json, os; print(json.dumps(dict(os.environ)))")
    env = json.loads(out.stdout)
    assert "PITWALL_FAKE_SECRET" not in env and b"hunter2" not in out.stdout
    assert env["PYTHONHASHSEED"] == "0" and env["TZ"] == "UTC" and env["HOME"] == "/scratch"
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "PYTHONPATH", "LD_LIBRARY_PATH", "LANG",
                        "LC_CTYPE", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "TZ"}


def test_runs_as_unprivileged_user(backend: GVisorBackend) -> None:
    code = """
import os
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
print(os.getuid(), os.geteuid(), os.getgid(), status["CapEff"].strip(), status["CapBnd"].strip())
"""
    out = run_py(backend, code)
    assert out.stdout.split() == [b"65534"] * 3 + [b"0000000000000000"] * 2


SMA = '''
import polars as pl
import pitwall

@pitwall.vectorized
def sma_cross(bars: pl.DataFrame, fast: int = 3, slow: int = 8) -> pl.DataFrame:
    print("computing", fast, slow)  # goes to the log, not to the result channel
    return bars.select(
        "ts", "symbol",
        weight=pl.when(pl.col("close").rolling_mean(fast).over("symbol")
                       > pl.col("close").rolling_mean(slow).over("symbol"))
        .then(0.5).otherwise(0.0),
    )
'''


def make_job(tmp_path: Path, source: str, params: dict[str, int],
             ) -> tuple[Path, Path, pl.DataFrame]:
    bundle, inputs = tmp_path / "bundle", tmp_path / "input"
    bundle.mkdir()
    inputs.mkdir()
    (bundle / "strategy.py").write_text(source)
    start = dt.datetime(2024, 1, 2, 14, 30, tzinfo=dt.UTC)
    ts = [start + dt.timedelta(minutes=i) for i in range(40)]
    bars = pl.DataFrame({
        "ts": ts * 2, "symbol": ["AAA"] * 40 + ["BBB"] * 40,
        "close": [100 + (i % 7) * 0.5 + i * 0.1 for i in range(40)]
        + [50 - i * 0.2 for i in range(40)],
    }).with_columns(open=pl.col("close"), high=pl.col("close") + 1, low=pl.col("close") - 1,
                    volume=pl.lit(1000.0)).with_columns(pl.col("ts").dt.cast_time_unit("us"))
    bars.write_ipc(inputs / "bars.arrow")
    spec = {"entrypoint": "strategy.py:sma_cross", "params": params, "seed": 7}
    (inputs / "spec.json").write_text(json.dumps(spec))
    return bundle, inputs, bars


def test_runner_round_trip(backend: GVisorBackend, tmp_path: Path) -> None:
    *_, bars = make_job(tmp_path, SMA, {"fast": 2, "slow": 5})
    out = backend.run(runner_request("sma", tmp_path, FAST))
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


def test_runner_reports_strategy_errors(backend: GVisorBackend, tmp_path: Path) -> None:
    broken = SMA.replace('print("computing", fast, slow)', "raise KeyError('close_px')")
    bundle, inputs, _ = make_job(tmp_path, broken, {})
    out = backend.run(runner_request("err", tmp_path, FAST, bundle_dir=bundle, input_dir=inputs))
    assert out.exit_code == 3
    assert out.reason == "KeyError: 'close_px'"
    [frame] = decode_frames(out.stdout)
    assert frame.kind is FrameKind.ERROR
    assert decode_error(frame.payload) == {"error": "KeyError", "message": "'close_px'"}
