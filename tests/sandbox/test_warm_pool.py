"""The warm pool: pre-started sandboxes, one job each, refilled, isolated, same results."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_helpers import FAST, SMA, make_job

from pitwall.frames import FrameKind, decode_frames, decode_result
from pitwall_executor.sandbox import owner
from pitwall_executor.sandbox.base import runner_request
from pitwall_executor.sandbox.checkpoint import SnapshotStore
from pitwall_executor.sandbox.gvisor import GVisorBackend
from pitwall_executor.sandbox.pool import PooledBackend, WarmPool

pytestmark = pytest.mark.sandbox

PROBE = SMA.replace(
    'print("computing", fast, slow)',
    'import os, sys, numpy\n'
    '    print("seen", sorted(os.listdir("/job/bundle")), numpy.random.rand(), file=sys.stderr)',
)


def store(backend: GVisorBackend) -> SnapshotStore:
    """The snapshot store the session's backend was composed with (conftest)."""
    assert isinstance(backend.snapshots, SnapshotStore)
    return backend.snapshots


@pytest.fixture
def pooled(backend: GVisorBackend, tmp_path_factory: pytest.TempPathFactory,
           ) -> Iterator[PooledBackend]:
    root = tmp_path_factory.mktemp("pool")
    root.chmod(0o755)
    pool = WarmPool(backend, 1, FAST, root / "slots", snapshots=store(backend))
    yield PooledBackend(backend, pool)
    pool.close()


def job(tmp_path: Path, name: str, source: str) -> Path:
    d = tmp_path / name
    d.mkdir()
    d.chmod(0o755)
    make_job(d, source, {"fast": 2, "slow": 5})
    for sub in ("bundle", "input"):
        (d / sub).chmod(0o755)
    return d


def test_warm_run_matches_cold_and_each_slot_serves_one_job(
    pooled: PooledBackend, backend: GVisorBackend, tmp_path: Path
) -> None:
    a = job(tmp_path, "a", PROBE)
    (a / "bundle" / "only_in_a.py").write_text("")
    b = job(tmp_path, "b", PROBE)
    cold = backend.run(runner_request("cold", a, FAST))
    assert pooled.pool.wait_ready(1, timeout=30)
    warm = pooled.run(runner_request("warm-a", a, FAST))
    assert warm.ok, warm.stderr.decode()
    assert warm.start_s is not None and warm.start_s < 1.0
    [wf], [cf] = decode_frames(warm.stdout), decode_frames(cold.stdout)
    assert wf.kind is FrameKind.RESULT
    assert decode_result(wf.payload).equals(decode_result(cf.payload))
    seen_cold = [ln for ln in cold.stderr.decode().splitlines() if ln.startswith("seen")]
    seen_warm = [ln for ln in warm.stderr.decode().splitlines() if ln.startswith("seen")]
    assert seen_warm == seen_cold  # same files, same seeded NumPy draw
    assert pooled.pool.wait_ready(1, timeout=30)  # refilled in the background
    second = pooled.run(runner_request("warm-b", b, FAST))
    assert second.ok and "only_in_a.py" not in second.stderr.decode()
    assert "'strategy.py'" in second.stderr.decode()


def test_pool_falls_back_cold_for_other_limits_and_times_out(
    pooled: PooledBackend, tmp_path: Path
) -> None:
    assert pooled.pool.wait_ready(1, timeout=30)
    a = job(tmp_path, "a", SMA)
    big = FAST.model_copy(update={"memory_mb": FAST.memory_mb * 2})
    assert not pooled.pool.fits(runner_request("x", a, big))
    assert pooled.run(runner_request("x", a, big)).ok
    slow = job(tmp_path, "slow", SMA.replace('print("computing", fast, slow)',
                                             "import time; time.sleep(60)"))
    t0 = time.monotonic()
    out = pooled.run(runner_request("slow", slow, FAST.model_copy(update={"timeout_s": 1.0})))
    assert out.timed_out and time.monotonic() - t0 < 4


def test_the_job_path_uses_the_pool_and_records_the_image(tmp_path: Path) -> None:
    import datetime as dt

    from pitwall.bundle import build_bundle
    from pitwall.models import BacktestSpec
    from pitwall_executor.config import load_config
    from pitwall_executor.datalake.catalog import Catalog, generate_dataset
    from pitwall_executor.orchestration.worker import Worker
    from pitwall_executor.stack import Stack

    tmp_path.chmod(0o755)
    generate_dataset(Catalog(tmp_path / "lake"), "sample", symbols=["AAA"],
                     start=dt.date(2024, 3, 4), end=dt.date(2024, 3, 5), seed=3)
    stack = Stack.from_config(load_config(environ={}, data_dir=tmp_path, sandbox="gvisor",
                                          pool_size=1, limits=FAST))
    backend = stack.backend
    assert isinstance(backend, PooledBackend)
    try:
        assert backend.pool.wait_ready(1, timeout=60)
        bundle = build_bundle({"strategy.py": SMA}, entrypoint="strategy.py:sma_cross")
        spec = BacktestSpec(dataset="sample", universe=["AAA"], start=dt.date(2024, 3, 4),
                            end=dt.date(2024, 3, 5), audit=False, limits=FAST)
        job_id = stack.submit(spec, bundle, researcher="t")
        assert backend.pool.ready_count() == 1
        Worker(stack).run_one(timeout=5)
        view = stack.store.get(job_id)
        assert view.status.value == "COMPLETED", view.reason
        assert backend.pool.ready_count() == 0 or backend.pool.wait_ready(1, 60)  # refilling
        report = (stack.artifacts.attempt_dir(job_id, 1) / "report.html").read_text()
        assert backend.image.startswith("sha256:") and backend.image in report
    finally:
        backend.close()


PRIVATE = SMA.replace(
    'print("computing", fast, slow)',
    'import os, sys\n'
    '    print("seen", sorted(os.listdir("/job/bundle")), sorted(os.listdir("/job/input")),\n'
    '          sorted(os.listdir("/scratch")), file=sys.stderr)\n'
    '    open("/scratch/left-by-" + sorted(os.listdir("/job/bundle"))[0], "w").close()',
)


def slot_quota(slot_dir: Path) -> int:
    """The CPU quota on the cgroup of the sandbox a slot (named by its dir) runs in."""
    [path] = Path("/sys/fs/cgroup/cpu").glob(
        f"pitwall-{owner.current().token}-warm-{slot_dir.name}-*/cpu.cfs_quota_us")
    return int(path.read_text())


def test_a_pool_refilled_by_restore_serves_one_job_per_private_slot(
    backend: GVisorBackend, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    assert store(backend).image(FAST) is not None  # else the first refills boot cold
    root = tmp_path_factory.mktemp("restored-pool")
    root.chmod(0o755)
    pool = WarmPool(backend, 2, FAST, root / "slots", snapshots=store(backend))
    pooled = PooledBackend(backend, pool)
    try:
        jobs = []
        for name in ("a", "b", "c", "d"):
            d = job(tmp_path, name, PRIVATE)
            (d / "bundle" / f"{name}_only.py").write_text("")
            jobs.append((name, d))
        cold = backend.run(runner_request("cold", jobs[0][1], FAST))
        outs: dict[str, object] = {}
        dirs: set[str] = set()
        for batch in (jobs[:2], jobs[2:]):  # two at once, then two more from the refills
            assert pool.wait_ready(2, timeout=60)
            with pool._lock:
                slots = list(pool._slots)
            dirs |= {s.dir.name for s in slots}
            # Ready means: restored, answered the ping, and under the job's quota again.
            assert [slot_quota(s.dir) for s in slots] == [int(FAST.cpus * 100_000)] * 2
            threads = [threading.Thread(target=lambda n=n, d=d: outs.__setitem__(
                n, pooled.run(runner_request(f"pool-{n}", d, FAST)))) for n, d in batch]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not [p for name in dirs for p in (root / "slots").glob(f"*/{name}")]
        assert len(dirs) == 4  # four jobs, four slots, each destroyed after its job
        assert pool.refills and {kind for kind, _ in pool.refills} == {"restored"}
        [cf] = decode_frames(cold.stdout)
        for name, _ in jobs:
            out = outs[name]
            assert isinstance(out, type(cold)) and out.ok, out
            [frame] = decode_frames(out.stdout)
            assert frame.kind is FrameKind.RESULT
            assert decode_result(frame.payload).equals(decode_result(cf.payload))
            [line] = [ln for ln in out.stderr.decode().splitlines() if ln.startswith("seen")]
            # Only its own files, and an empty scratch: no other job's leftovers.
            assert line == (f"seen ['{name}_only.py', 'strategy.py'] "
                            "['bars.arrow', 'spec.json'] []"), line
    finally:
        pool.close()


def test_a_failed_restore_refills_cold(tmp_path: Path,
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    own = GVisorBackend(tmp_path_factory.mktemp("pool-broken-state"))
    snapshots = SnapshotStore.attach(own)
    image = snapshots.image(FAST)
    assert image is not None
    data = (image / "checkpoint.img").read_bytes()
    (image / "checkpoint.img").write_bytes(data[: len(data) // 50])  # truncated on disk
    root = tmp_path_factory.mktemp("broken-pool")
    root.chmod(0o755)
    pool = WarmPool(own, 1, FAST, root / "slots", snapshots=snapshots)
    try:
        assert pool.wait_ready(1, timeout=60)
        assert [kind for kind, _ in pool.refills] == ["cold"]
        assert not image.exists()  # dropped: a later refill rebuilds it
        out = PooledBackend(own, pool).run(runner_request("after", job(tmp_path, "a", SMA),
                                                          FAST))
        assert out.ok, out.stderr.decode()
        assert pool.wait_ready(1, timeout=60)  # the next refill: a rebuilt image, restored
        assert [kind for kind, _ in pool.refills] == ["cold", "restored"]
    finally:
        pool.close()
