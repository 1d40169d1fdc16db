"""Attacks that each need a job of their own: a clear terminal status and reason, a
contained outcome, and nothing of the job left on the host afterwards."""

from __future__ import annotations

import datetime as dt

import pytest

from conftest import BENIGN, HEADER, Env, results
from pitwall_executor.datalake.market_calendar import trading_minutes

pytestmark = pytest.mark.sandbox


def body(code: str) -> str:
    """A strategy ``s(bars)`` running ``code`` then returning flat weights."""
    lines = "\n".join("    " + ln for ln in code.strip().splitlines())
    return f"@pitwall.vectorized\ndef s(bars):\n{lines}\n    return bars.select(\"ts\", " \
           "\"symbol\", weight=pl.lit(0.0))\n"


def test_fork_bomb_fails_on_the_process_limit(env: Env) -> None:
    # Enough memory that the process limit, not the memory limit, is what stops it, and
    # time enough that it is reached on a loaded host (a fork under gVisor is ~0.1 s).
    a = env.run(body("while True:\n    if os.fork() == 0:\n        time.sleep(600)"),
                limits={"memory_mb": 2048, "pids": 32, "timeout_s": 90})
    assert a.view.status.value == "FAILED"
    assert "Resource temporarily unavailable" in a.reason
    assert a.leftovers == []


def test_memory_bomb_fails_with_the_memory_limit(env: Env) -> None:
    a = env.run(body("hog = []\nwhile True:\n    hog.append(bytearray(16 * 2**20))"))
    assert a.view.status.value == "FAILED"
    assert a.reason.startswith("memory limit of 256 MiB exceeded")
    assert a.leftovers == []


def test_cpu_spin_is_timed_out(env: Env) -> None:
    a = env.run(body("while True:\n    pass"), limits={"timeout_s": 3})
    assert a.view.status.value == "TIMED_OUT"
    assert "wall-clock limit of 3 s exceeded" in a.reason
    assert a.view.started_at and a.view.finished_at
    assert (a.view.finished_at - a.view.started_at).total_seconds() < 3 + 8
    assert a.leftovers == []


def test_filling_the_disk_stops_at_the_scratch_cap(env: Env) -> None:
    a = env.run(body("with open('/scratch/fill', 'wb') as f:\n"
                     "    while True:\n        f.write(b'x' * 2**20)"))
    assert a.view.status.value == "FAILED"
    assert "File too large" in a.reason or "No space left" in a.reason
    assert a.leftovers == []


def test_stdout_flood_is_capped_in_the_log(env: Env) -> None:
    a = env.run(body("for _ in range(40):\n    print('y' * 2**20)"))
    assert a.view.status.value == "COMPLETED", a.reason
    assert len(a.log) <= 64 * 1024 + 200 and "bytes cut" in a.log
    assert a.leftovers == []


def test_garbage_on_the_result_channel_fails_the_job(env: Env) -> None:
    # The channel is a private fd of the runner's process; a strategy can still find it.
    a = env.run(body("for fd in os.listdir('/proc/self/fd'):\n    if int(fd) > 2:\n"
                     "        try:\n            os.write(int(fd), b'garbage' * 100)\n"
                     "        except OSError:\n            pass"))
    assert a.view.status.value == "FAILED"
    assert a.reason.startswith("invalid strategy output")
    assert a.leftovers == []


def test_a_forged_result_frame_is_refused(env: Env) -> None:
    a = env.run(body(
        "import io\nfrom pitwall.frames import FrameKind, encode_frame\n"
        "buf = io.BytesIO()\n"
        "bars.select('ts', 'symbol', weight=pl.lit(1.0)).write_ipc_stream(buf)\n"
        "for fd in os.listdir('/proc/self/fd'):\n    if int(fd) > 2:\n        try:\n"
        "            os.write(int(fd), encode_frame(FrameKind.RESULT, buf.getvalue()))\n"
        "        except OSError:\n            pass"))
    assert a.view.status.value == "FAILED"
    # Either the whole forged frame landed (two results) or gVisor cut the pipe write.
    assert a.reason.startswith("invalid strategy output")
    assert "produced 2 results" in a.reason or "not a Pitwall frame" in a.reason
    assert a.leftovers == []


def test_an_enormous_result_is_refused(env: Env) -> None:
    a = env.run("@pitwall.vectorized\ndef s(bars):\n"
                "    return pl.concat([bars.select('ts', 'symbol', weight=pl.lit(0.1))] * 200)\n",
                limits={"output_mb": 1})
    assert a.view.status.value == "FAILED"
    assert a.reason.startswith("invalid strategy output") and "exceeds" in a.reason
    assert a.leftovers == []


def test_nan_weights_are_refused(env: Env) -> None:
    a = env.run("@pitwall.vectorized\ndef s(bars):\n"
                "    return bars.select('ts', 'symbol', weight=pl.lit(float('nan')))\n")
    assert a.view.status.value == "FAILED"
    assert "NaN" in a.reason and "row 0" in a.reason
    assert a.view.metrics is None


def test_wrong_schema_is_refused(env: Env) -> None:
    a = env.run("@pitwall.vectorized\ndef s(bars):\n"
                "    return bars.select('ts', 'symbol', weight=pl.lit('all in'))\n")
    assert a.view.status.value == "FAILED"
    assert "weight" in a.reason
    assert a.view.metrics is None


def test_wrong_length_is_refused(env: Env) -> None:
    a = env.run("@pitwall.vectorized\ndef s(bars):\n"
                "    w = bars.select('ts', 'symbol', weight=pl.lit(0.1))\n"
                "    return pl.concat([w, w])\n")
    assert a.view.status.value == "FAILED"
    assert "4680 weight rows but there are only 2340 bars" in a.reason
    assert a.view.metrics is None


def test_a_returned_non_frame_is_refused(env: Env) -> None:
    a = env.run("@pitwall.vectorized\ndef s(bars):\n    return {'sharpe': 99}\n")
    assert a.view.status.value == "FAILED"
    assert "returned dict" in a.reason


def test_a_daemonised_child_dies_with_its_job(env: Env) -> None:
    a = env.run(body("if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                     "        while True:\n            open('/scratch/alive', 'w').write('x')\n"
                     "            time.sleep(0.1)\n    os._exit(0)\ntime.sleep(0.5)"))
    assert a.view.status.value == "COMPLETED", a.reason
    assert a.view.started_at and a.view.finished_at
    assert (a.view.finished_at - a.view.started_at).total_seconds() < 15
    assert a.leftovers == []  # no runsc, gofer or sandboxed process survives the job


def test_killing_every_process_in_the_sandbox_only_ends_the_job(env: Env) -> None:
    a = env.run(body("import signal\nfor pid in (-1, 0):\n    try:\n"
                     "        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
                     "os.kill(os.getpid(), signal.SIGKILL)"))
    assert a.view.status.value == "FAILED"
    assert "exited with code" in a.reason
    assert a.leftovers == []


def test_tampering_with_the_sdk_cannot_change_the_reported_pnl(env: Env) -> None:
    tamper = HEADER + '''
import pitwall.engine.metrics as _m, pitwall.engine.vectorized as _x, pitwall.engine.validate as _v
_m.compute_metrics = lambda *a, **k: {"sharpe": 99.0, "total_return": 10.0}
_x.run_vectorized = lambda *a, **k: None
_v.validate_weights = lambda w, *a, **k: w
import pitwall.frames as _c
_c.decode_frames = lambda *a, **k: []
'''
    a = env.run(BENIGN.removeprefix(HEADER), header=tamper)
    assert a.view.status.value == "COMPLETED", a.reason
    # computed outside, by the trusted engine (the audit's verdict aside: the reference
    # job ran without one)
    assert results(a.view.metrics) == results(env.reference.metrics)
    assert a.leftovers == []


def test_the_sandbox_never_sees_a_bar_after_end(env: Env) -> None:
    a = env.run(body("print('LAST', bars['ts'].max().isoformat(), bars.height, file=sys.stderr)\n"
                     "print('FILES', sorted(os.listdir('/job/input')), file=sys.stderr)"))
    assert a.view.status.value == "COMPLETED", a.reason
    # the main run's line first; with the audit on, its re-runs follow, each on fewer bars
    line, *reruns = [ln for ln in a.log.splitlines() if ln.startswith("LAST")]
    _, last, rows = line.split()
    assert all(int(r.split()[2]) < int(rows) for r in reruns)
    assert bool(reruns) == env.audit
    spec = env.spec()
    assert dt.datetime.fromisoformat(last).date() == spec.end  # the last bar is on `end` ...
    # ... and exactly the requested days are there,
    assert int(rows) == trading_minutes(spec.start, spec.end) * len(spec.universe)
    assert "FILES ['bars.arrow', 'spec.json']" in a.log  # while the lake holds 2 more weeks
    assert a.leftovers == []
