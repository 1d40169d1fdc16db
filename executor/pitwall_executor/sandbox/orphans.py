"""What dead worker processes left on this host, found and removed (docs/architecture.md §1.5).

A worker's sandboxes are destroyed by their supervisors (:mod:`.supervisor`) within a
second or two of its death. What remains is what the worker itself wrote, and anything
whose supervisor did not get to act (killed with it, or a worker of an older release):

- gVisor sandboxes of a state dir (runsc's ``--root`` and the OCI bundle dirs), named
  ``pitwall-<owner>-…`` (:mod:`.owner`);
- empty cgroups called ``pitwall-<owner>-…`` anywhere on the host;
- Docker containers labelled with this host and their owner;
- warm-pool dirs (``pool-<owner>-…``, holding links to a job's bars) and unfinished
  checkpoint builds (``.build-<owner>-…``);
- job work dirs (``<jobs>/<job>/attempt-<n>``, with ``input/bars.arrow``) whose
  :data:`owner.MARKER` names a dead owner of this host; then the job's dir if empty.

Everything is judged by its owner: a dead process of this host (pid and start time no
longer match). A live owner's things, another host's, and anything unmarked are left
alone. Every function is idempotent and safe to run from several processes at once.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from pitwall_executor.sandbox import owner, supervisor

if TYPE_CHECKING:
    import docker

log = logging.getLogger(__name__)
#: The prefix of every runsc container id and of the cgroups named after it.
CID_PREFIX = "pitwall-"
POOL_PREFIX = "pool-"
BUILD_PREFIX = ".build-"
#: Docker labels: the worker process that started the container and its host.
OWNER_LABEL = "pitwall.owner"
HOST_LABEL = "pitwall.host"


@dataclass(frozen=True)
class ReapReport:
    """What one pass removed: sandboxes (runsc ids, container names), cgroup dirs, and
    other dirs (job work dirs, bundle, pool and build dirs)."""

    sandboxes: tuple[str, ...] = ()
    cgroups: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()

    def __add__(self, other: ReapReport) -> ReapReport:
        return ReapReport(*(getattr(self, f.name) + getattr(other, f.name)
                            for f in fields(self)))

    def __bool__(self) -> bool:
        return bool(self.sandboxes or self.cgroups or self.paths)

    def __str__(self) -> str:
        return "; ".join(f"{len(items)} {f.name}: {', '.join(items)}" for f in fields(self)
                         if (items := getattr(self, f.name)))


def _dead(who: owner.Owner | None) -> bool:
    return who is not None and not who.alive()


def runsc_ids(state_dir: Path) -> set[str]:
    """The container ids of a gVisor state dir: runsc's state files and the bundle dirs."""
    ids = set()
    root, jobs = state_dir / "runsc", state_dir / "jobs"
    for path in root.iterdir() if root.is_dir() else ():
        name = path.name  # <id>_sandbox:<id>.state | .lock, runsc-<id>.sock
        name = name.removeprefix("runsc-").removesuffix(".sock").split("_sandbox:", 1)[0]
        if name.startswith(CID_PREFIX):
            ids.add(name)
    for path in jobs.iterdir() if jobs.is_dir() else ():
        if path.name.startswith(CID_PREFIX):
            ids.add(path.name)
    return ids


def reap_runsc(state_dir: Path, runsc: str) -> ReapReport:
    """Destroy the sandboxes of ``state_dir`` (a ``GVisorBackend``'s) whose owner died:
    their processes, runsc state, cgroups and bundle dirs."""
    destroyed, cgroups, paths = [], [], []
    for cid in sorted(runsc_ids(state_dir)):
        if not _dead(owner.named(cid, CID_PREFIX)):
            continue
        cgroups += [str(p) for p in supervisor.cgroup_dirs(cid)]
        bundle = state_dir / "jobs" / cid
        if bundle.exists():
            paths.append(str(bundle))
        supervisor.destroy_runsc(runsc, state_dir / "runsc", cid, bundle)
        destroyed.append(cid)
    if destroyed:
        log.warning("destroyed %d sandbox(es) left by dead worker processes: %s",
                    len(destroyed), ", ".join(destroyed))
    return ReapReport(tuple(destroyed), tuple(cgroups), tuple(paths))


def reap_cgroups() -> ReapReport:
    """Remove the empty cgroups of this host named after a dead owner's sandbox.

    Only empty ones: a task still in one is killed through its state dir
    (:func:`reap_runsc`), which knows it is ours; this is the clean-up of groups whose
    state dir is gone (a removed test or data dir)."""
    removed = []
    for path in supervisor.cgroup_dirs(f"{CID_PREFIX}*"):
        if not _dead(owner.named(path.name, CID_PREFIX)):
            continue
        with contextlib.suppress(OSError):  # not empty (EBUSY), or already gone
            path.rmdir()
            removed.append(str(path))
    return ReapReport(cgroups=tuple(removed))


def _reap_dirs(root: Path, prefix: str) -> ReapReport:
    removed = []
    for path in root.glob(f"{prefix}*") if root.is_dir() else ():
        if _dead(owner.named(path.name, prefix)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return ReapReport(paths=tuple(removed))


def reap_pools(pool_root: Path) -> ReapReport:
    """Remove the dirs of warm pools whose process died (slots hold links to job files)."""
    return _reap_dirs(pool_root, POOL_PREFIX)


def reap_builds(snapshot_root: Path) -> ReapReport:
    """Remove checkpoint images a dead process was building (``checkpoint.SnapshotStore``)."""
    return _reap_dirs(snapshot_root, BUILD_PREFIX)


def reap_work_dirs(jobs_dir: Path) -> ReapReport:
    """Remove the job work dirs (``<jobs_dir>/<job>/attempt-<n>``) that a dead process of
    this host marked as its own, then each job dir left empty."""
    removed = []
    here = owner.host()
    for job in jobs_dir.iterdir() if jobs_dir.is_dir() else ():
        for attempt in job.glob("attempt-*"):
            mark = owner.marked(attempt)
            if mark is None or mark[0] != here or mark[1].alive():
                continue
            shutil.rmtree(attempt, ignore_errors=True)
            removed.append(str(attempt))
            with contextlib.suppress(OSError):  # another attempt is still there
                job.rmdir()
    if removed:
        log.warning("removed %d job work dir(s) left by dead worker processes: %s",
                    len(removed), ", ".join(removed))
    return ReapReport(paths=tuple(removed))


def reap_containers(client: docker.DockerClient) -> ReapReport:
    """Force-remove the containers of dead worker processes of this host; their names."""
    import docker.errors

    destroyed = []
    for container in client.containers.list(
            all=True, filters={"label": [f"{HOST_LABEL}={owner.host()}", OWNER_LABEL]}):
        if not _dead(owner.Owner.parse(container.labels.get(OWNER_LABEL, ""))):
            continue
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: a removal is already in progress
                raise
        destroyed.append(str(container.name))
    if destroyed:
        log.warning("removed %d container(s) left by dead worker processes: %s",
                    len(destroyed), ", ".join(destroyed))
    return ReapReport(sandboxes=tuple(destroyed))
