"""Cold runner jobs restored from a checkpoint (sandbox/checkpoint.py): same results, same
isolation and the same policy as a plain cold start, on the real runsc."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

import pytest
from sandbox_helpers import FAST, SMA, host_listener, make_job

from pitwall.frames import FrameKind, decode_frames, decode_result
from pitwall.models import Limits
from pitwall_executor.sandbox import oci, owner
from pitwall_executor.sandbox.base import SandboxOutcome, runner_request
from pitwall_executor.sandbox.checkpoint import SnapshotStore
from pitwall_executor.sandbox.gvisor import GVisorBackend

pytestmark = pytest.mark.sandbox

PROBE = SMA.replace(
    'print("computing", fast, slow)',
    'import os, sys, random, numpy\n'
    '    print("seen", sorted(os.listdir("/job/bundle")), sorted(os.listdir("/job/input")),\n'
    '          sorted(os.listdir("/scratch")), random.random(), numpy.random.rand(),\n'
    '          file=sys.stderr)\n'
    '    open("/scratch/left-by-" + sorted(os.listdir("/job/bundle"))[0], "w").close()',
)


def job(tmp_path: Path, name: str, source: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    make_job(d, source, {"fast": 2, "slow": 5})
    for p in (tmp_path, d, d / "bundle", d / "input"):
        p.chmod(0o755)
    return d


def store(backend: GVisorBackend) -> SnapshotStore:
    assert isinstance(backend.snapshots, SnapshotStore)
    return backend.snapshots


def restored(backend: GVisorBackend, job_id: str, job_dir: Path,
             limits: Limits = FAST) -> SandboxOutcome:
    """Run through the restore path and prove it was taken (not the plain cold fallback)."""
    snapshots = store(backend)
    assert snapshots.image(limits) is not None  # built once, then reused
    before = snapshots.restored
    out = backend.run(runner_request(job_id, job_dir, limits))
    assert snapshots.restored == before + 1, out.stderr.decode()
    return out


def plain_cold(backend: GVisorBackend, job_id: str, job_dir: Path) -> SandboxOutcome:
    request = runner_request(job_id, job_dir, FAST)
    return backend.launch(request, arm=True).collect(request)


def seen(out: SandboxOutcome) -> list[str]:
    return [ln for ln in out.stderr.decode().splitlines() if ln.startswith("seen")]


def test_restored_job_matches_a_plain_cold_run(backend: GVisorBackend, tmp_path: Path) -> None:
    a = job(tmp_path, "a", PROBE)
    cold = plain_cold(backend, "cold", a)
    warm = restored(backend, "restored", a)
    assert warm.ok and cold.ok, warm.stderr.decode()
    [rf], [cf] = decode_frames(warm.stdout), decode_frames(cold.stdout)
    assert rf.kind is FrameKind.RESULT
    got = decode_result(rf.payload)
    assert got.equals(decode_result(cf.payload)) and got.num_rows == 80
    # Same files, nothing in scratch, and `random` and NumPy seeded per job, after restore.
    assert seen(warm) == seen(cold) and len(seen(warm)) == 1
    assert "[] " in seen(warm)[0]  # an empty /scratch: the image holds no job's leftovers
    assert warm.start_s is not None and warm.start_s < 5.0


def test_restored_jobs_do_not_see_each_others_files(backend: GVisorBackend,
                                                    tmp_path: Path) -> None:
    a, b = job(tmp_path, "a", PROBE), job(tmp_path, "b", PROBE)
    (a / "bundle" / "a_only.py").write_text("SECRET = 1\n")
    (b / "input" / "b_only.txt").write_text("secret")
    snapshots = store(backend)
    assert snapshots.image(FAST) is not None
    before = snapshots.restored
    outs: dict[str, SandboxOutcome] = {}
    threads = [threading.Thread(target=lambda n=n, d=d: outs.__setitem__(n, backend.run(
        runner_request(f"iso-{n}", d, FAST)))) for n, d in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert snapshots.restored == before + 2  # both at once, each in its own restored sandbox
    [seen_a], [seen_b] = seen(outs["a"]), seen(outs["b"])
    assert "['a_only.py', 'strategy.py'] ['bars.arrow', 'spec.json'] []" in seen_a
    assert "['strategy.py'] ['b_only.txt', 'bars.arrow', 'spec.json'] []" in seen_b
    assert "b_only" not in seen_a and "a_only" not in seen_b
    # Each left a file in its scratch; a third job, restored after them, sees none.
    c = job(tmp_path, "c", PROBE)
    [seen_c] = seen(restored(backend, "iso-c", c))
    assert "['strategy.py'] ['bars.arrow', 'spec.json'] []" in seen_c


POLICY = '''
import ctypes, json, os, socket, sys
res = {}
for host, port in TARGETS:
    try:
        socket.create_connection((host, port), timeout=2).close()
        res[host] = "connected"
    except OSError as e:
        res[host] = type(e).__name__
for p in ["/x", "/job/bundle/x", "/job/input/x", "/usr/x", "/tmp/x", "/opt/pitwall/sdk/x"]:
    try:
        open(p, "w").write("x")
        res[p] = "written"
    except OSError as e:
        res[p] = e.errno
res["mounts"] = {l.split()[1]: l.split()[3].split(",")[0] for l in open("/proc/self/mounts")}
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines())
res["ids"] = [os.getuid(), os.geteuid(), os.getgid(), status["CapEff"].strip(),
              ctypes.CDLL(None).prctl(39, 0, 0, 0, 0)]
res["env"] = sorted(os.environ)
open("/scratch/now", "w").close()
res["real_time"] = os.stat("/scratch/now").st_mtime  # the sentry's clock, not the SDK's
print("policy", json.dumps(res), file=sys.stderr)
import time
time.sleep(SLEEP)
'''


def policy_job(tmp_path: Path, name: str, targets: list[tuple[str, int]], sleep: float) -> Path:
    source = POLICY.replace("TARGETS", repr(targets)).replace("SLEEP", repr(sleep)) + SMA
    return job(tmp_path, name, source)


def test_restored_sandbox_keeps_the_policy(backend: GVisorBackend, tmp_path: Path) -> None:
    """Network none, read-only mounts, nobody without capabilities, the fixed environment,
    the batch CPU weight, and a real clock that is the host's after the restore."""
    with host_listener() as (listener, targets):
        d = policy_job(tmp_path, "policy", targets, sleep=3.0)
        store(backend).image(FAST)
        result: list[SandboxOutcome] = []
        runner = threading.Thread(target=lambda: result.append(restored(backend, "pol", d)))
        runner.start()
        try:
            found: list[Path] = []
            deadline = time.monotonic() + 20
            while not found and time.monotonic() < deadline:
                found = [p for p in Path("/sys/fs/cgroup/cpu").glob(
                    f"pitwall-{owner.current().token}-pol-*") if (p / "cpu.shares").exists()]
                time.sleep(0.05)
            assert found, "no cpu cgroup of the restored sandbox appeared"
            # The last reading while it runs: the quota is lifted during the restore.
            while runner.is_alive() and (found[0] / "cpu.shares").exists():
                with contextlib.suppress(OSError, ValueError):
                    shares = int((found[0] / "cpu.shares").read_text())
                    quota = int((found[0] / "cpu.cfs_quota_us").read_text())
                time.sleep(0.05)
        finally:
            runner.join()
        with pytest.raises(TimeoutError):
            listener.accept()
    [out] = result
    assert out.ok, out.stderr.decode()
    assert shares == oci.SANDBOX_CPU_SHARES and quota == int(FAST.cpus * 100_000)
    [line] = [ln for ln in out.stderr.decode().splitlines() if ln.startswith("policy ")]
    res = json.loads(line.removeprefix("policy "))
    assert res["127.0.0.1"] == "ConnectionRefusedError"
    assert "connected" not in res.values(), res
    for p in ["/x", "/job/bundle/x", "/job/input/x", "/usr/x", "/tmp/x", "/opt/pitwall/sdk/x"]:
        assert res[p] in (13, 30), (p, res[p])  # EACCES or EROFS
    mounts = res["mounts"]
    # /usr and /tmp are the sandbox image's read-only root, not mounts of their own.
    assert [mounts[t] for t in ("/", "/job/bundle", "/job/input")] == ["ro"] * 3
    assert "/tmp" not in mounts and "/usr" not in mounts
    assert res["ids"] == [65534, 65534, 65534, "0000000000000000", 1]
    # polars sets _RJEM_MALLOC_CONF on import, in a plain cold runner job as well.
    assert set(res["env"]) <= {"PATH", "HOME", "TMPDIR", "PYTHONPATH", "LD_LIBRARY_PATH",
                               "LANG", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "TZ",
                               "PYTHONPYCACHEPREFIX", "_RJEM_MALLOC_CONF"}
    # Written ~3.5 s before the run ended: the restored sandbox's clock is the host's now,
    # not the time the image was saved.
    ended = time.time()
    assert ended - 15 < res["real_time"] < ended


SPIN = '''
import os, sys, time
def now():  # the sentry's real clock (time.time is the SDK's simulated one)
    path = f"/scratch/now-{time.monotonic_ns()}"
    open(path, "w").close()
    return os.stat(path).st_mtime
started = now()
end = time.monotonic() + 1.0
while time.monotonic() < end:
    pass
print("ran", started, now(), file=sys.stderr)
'''


def test_the_restore_runs_unthrottled_and_the_job_under_its_quota(
    backend: GVisorBackend, tmp_path: Path
) -> None:
    """The quota is lifted for the restore and back before the job's first line runs."""
    d = job(tmp_path, "quota", SPIN + SMA)
    store(backend).image(FAST)
    result: list[SandboxOutcome] = []
    runner = threading.Thread(target=lambda: result.append(restored(backend, "quota", d)))
    samples: list[tuple[float, int]] = []
    runner.start()
    try:
        pattern = f"pitwall-{owner.current().token}-quota-*/cpu.cfs_quota_us"
        while runner.is_alive():
            for path in Path("/sys/fs/cgroup/cpu").glob(pattern):
                with contextlib.suppress(OSError, ValueError):
                    samples.append((time.time(), int(path.read_text())))
            time.sleep(0.002)
    finally:
        runner.join()
    [out] = result
    assert out.ok, out.stderr.decode()
    [line] = [ln for ln in out.stderr.decode().splitlines() if ln.startswith("ran ")]
    started, ended = map(float, line.split()[1:])
    quota = int(FAST.cpus * 100_000)
    during = [q for t, q in samples if started <= t <= ended]
    assert len(during) > 50 and set(during) == {quota}, sorted(set(during))
    assert -1 in {q for t, q in samples if t < started}  # lifted while restoring


def test_restored_job_times_out_and_is_killed(backend: GVisorBackend, tmp_path: Path) -> None:
    d = policy_job(tmp_path, "slow", [], sleep=60.0)
    limits = FAST.model_copy(update={"timeout_s": 2.0})  # not baked: same image as FAST
    assert store(backend).key(limits) == store(backend).key(FAST)
    t0 = time.monotonic()
    out = restored(backend, "slow", d, limits)
    assert out.timed_out and not out.ok
    assert time.monotonic() - t0 < 2.0 + 8  # stopped at its limit, not after its 60 s sleep

    # Cancel once the restored job runs (the strategy's sleep), not while it is restoring:
    # under load a restore can take longer than a fixed delay, and a sandbox killed before
    # its "ready" is a failed restore that falls back cold.
    snapshots = store(backend)
    before = snapshots.restored

    killed_at: list[float] = []

    def cancel_when_running() -> None:
        deadline = time.monotonic() + 30
        while snapshots.restored == before and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        killed_at.append(time.monotonic())
        backend.kill("cancel-me")

    killer = threading.Thread(target=cancel_when_running)
    killer.start()
    out = restored(backend, "cancel-me", d)
    killer.join()
    assert out.cancelled and not out.timed_out
    assert time.monotonic() - killed_at[0] < 3.0  # gone at once, not at its 20 s limit


def test_a_broken_image_falls_back_cold_and_is_rebuilt(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    own = GVisorBackend(tmp_path_factory.mktemp("snapshot-state"))
    snapshots = SnapshotStore.attach(own)
    image = snapshots.image(FAST)
    # The sandbox's state (its memory is in pages.img): ~1 MB on the image's root.
    assert image is not None and (image / "checkpoint.img").stat().st_size > 500_000
    other = FAST.model_copy(update={"memory_mb": FAST.memory_mb * 2})
    assert snapshots.key(other) != snapshots.key(FAST)  # baked limits: their own image
    data = (image / "checkpoint.img").read_bytes()
    (image / "checkpoint.img").write_bytes(data[: len(data) // 50])  # truncated on disk
    a = job(tmp_path, "a", SMA)
    out = own.run(runner_request("broken", a, FAST))
    assert out.ok, out.stderr.decode()  # served plain cold
    assert (snapshots.fallbacks, snapshots.restored) == (1, 0)
    assert not image.exists()  # dropped, so the next job rebuilds it
    assert restored(own, "rebuilt", a).ok


def test_a_job_cannot_pass_itself_off_as_a_failed_restore(backend: GVisorBackend,
                                                          tmp_path: Path) -> None:
    """runsc's restore error on the job's own stderr does not drop the image or rerun it."""
    fake = ('import os, sys\n'
            'sys.stderr.write(\'running container: starting container: restoring container '
            '"x": header error\\n\')\nsys.stderr.flush()\nos._exit(128)\n') + SMA
    d = job(tmp_path, "fake", fake)
    snapshots = store(backend)
    image = snapshots.image(FAST)
    assert image is not None
    fallbacks = snapshots.fallbacks
    out = restored(backend, "fake", d)
    assert out.exit_code == 128 and not out.stdout
    assert snapshots.fallbacks == fallbacks and (image / "checkpoint.img").is_file()
