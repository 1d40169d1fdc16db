"""Warm-pool refill: a slot booted cold against one restored from the snapshot store.

Two pools of one slot each, over the same runtime: one on a backend without snapshots
(every refill boots and imports), one on the default backend (refills ``runsc restore``
the warm runner's checkpoint; ``sandbox/pool.py``). In rounds, each pool's slot is taken
and destroyed and the time until its replacement is ready is read from the pool
(``WarmPool.refills``: from the slot's start to "ready", after the restored slot's
handshake and quota reset), with the CPU time its sandbox's cgroup used so far (the
sentry and gofer; not the host-side ``runsc`` parent). Median of N rounds.
Run: ``.venv/bin/python bench/pool_refill.py [N]``.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from pitwall.models import Limits
from pitwall_executor.sandbox import owner
from pitwall_executor.sandbox.checkpoint import SnapshotStore
from pitwall_executor.sandbox.gvisor import GVisorBackend
from pitwall_executor.sandbox.pool import WarmPool


def slot_cpu_s(pool: WarmPool) -> float:
    """CPU seconds used by the cgroup of the pool's one idle slot."""
    with pool._lock:
        [slot] = pool._slots
    [usage] = Path("/sys/fs/cgroup/cpuacct").glob(
        f"pitwall-{owner.current().token}-warm-{slot.dir.name}-*/cpuacct.usage")
    return int(usage.read_text()) / 1e9


def refill(pool: WarmPool) -> tuple[str, float, float]:
    slot = pool.take()
    assert slot is not None
    slot.destroy()
    assert pool.wait_ready(1, timeout=60)
    kind, seconds = pool.refills[-1]
    return kind, seconds, slot_cpu_s(pool)


def main(n: int = 7) -> None:
    print(f"load before: {Path('/proc/loadavg').read_text().split()[:3]}")
    limits = Limits()
    with tempfile.TemporaryDirectory(prefix="pitwall-bench-") as state:
        root = Path(state)
        root.chmod(0o755)
        plain = GVisorBackend(root / "plain")
        restoring = GVisorBackend(root / "restoring")
        snapshots = SnapshotStore.attach(restoring)
        assert snapshots.image(limits) is not None  # built untimed
        pools = {"cold boot": WarmPool(plain, 1, limits, root / "pool-plain"),
                 "restored": WarmPool(restoring, 1, limits, root / "pool-restoring",
                                      snapshots=snapshots)}
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in pools}
        try:
            for pool in pools.values():
                assert pool.wait_ready(1, timeout=60)
            for i in range(n + 1):  # one warm-up round
                for name, pool in pools.items():
                    kind, seconds, cpu = refill(pool)
                    assert kind == ("cold" if name == "cold boot" else "restored"), kind
                    if i:
                        samples[name].append((seconds, cpu))
        finally:
            for pool in pools.values():
                pool.close()
    for name, got in samples.items():
        wall = statistics.median(s for s, _ in got)
        cpu = statistics.median(c for _, c in got)
        print(f"refill one slot, {name:9s}: {wall * 1000:7.1f} ms to ready, "
              f"{cpu * 1000:7.1f} ms CPU in its cgroup  (median of {n})")
    print(f"load after: {Path('/proc/loadavg').read_text().split()[:3]}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
