"""Lake files on local disk for a job: straight from a local lake, or via the cache from S3.

The catalog's metadata (everything of a dataset outside ``data/``: version files) is small
and immutable, so for a remote lake it is mirrored into a local directory on demand and
the unchanged :class:`Catalog` reads it there; data files come through the content-hashed
:class:`FileCache`, whole or, for a job needing a small part of an indexed file, as just the
row groups it reads (``group_cache.py``). ``pitwall data push`` copies a local dataset to a
bucket with the same key layout (``<dataset>/data/<sha>.parquet``, ``<dataset>/_versions/…``).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from pitwall.errors import DataError, UnknownDatasetError
from pitwall_executor.datalake.cache import FileCache, Pin
from pitwall_executor.datalake.catalog import Catalog
from pitwall_executor.datalake.group_cache import (
    GroupRun,
    cold_groups,
    file_fetch,
    group_key,
    group_runs,
    group_span,
    groups_fetch,
    prefer_groups,
    verify_group,
)
from pitwall_executor.storage import LocalObjectStore, ObjectStore, open_store

if TYPE_CHECKING:
    from pitwall_executor.config import Config
    from pitwall_executor.datalake.chunk_index import Fetch
    from pitwall_executor.datalake.snapshot import FileEntry, Snapshot, SnapshotInfo

__all__ = ["LakeFiles", "MirroredCatalog", "PushReport", "push_dataset", "sync_metadata"]

_DATA_DIR = "data/"
_VERSIONS_DIR = "_versions/"  # what names a version: uploaded after everything it names
_FETCH_THREADS = 8

_Tag = tuple[str, int | None]  # (file sha256, row group or None for the whole file)
_Task = Callable[[], list[tuple[_Tag, Pin]]]


class LakeFiles:
    """Turns a job's planned :class:`FileEntry` list into local paths it can scan."""

    def __init__(self, store: ObjectStore, cache: FileCache | None = None) -> None:
        if cache is None and not isinstance(store, LocalObjectStore):
            raise ValueError("a remote object store needs a FileCache to hold local copies")
        self.store = store
        self.cache = cache
        self._pins: list[Pin] = []
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: Config) -> LakeFiles:
        """A local lake is read in place; an ``s3://`` lake goes through the worker cache."""
        url = config.lake_url or str(config.lake_dir)
        store = open_store(url, endpoint_url=config.s3_endpoint_url, region=config.s3_region)
        if isinstance(store, LocalObjectStore):
            return cls(store)
        return cls(store, FileCache(config.cache_dir, config.cache_mb * 2**20))

    @property
    def remote(self) -> bool:
        """Whether files are copied from elsewhere (True) or read where they lie."""
        return self.cache is not None

    def catalog(self, local_root: Path) -> Catalog:
        """The catalog to plan with: the lake itself, or a local mirror of its metadata."""
        if self.remote:
            return MirroredCatalog(local_root, self.store)
        assert isinstance(self.store, LocalObjectStore)
        return Catalog(self.store.root)

    def local_paths(self, dataset: str, entries: Sequence[FileEntry]) -> list[Path]:
        """Local paths of ``entries`` of ``dataset``, in order, fetched and verified if needed.

        From a remote lake the files stay pinned in the cache (never evicted) until
        :meth:`release` or the next call, so the caller can scan them safely.

        Raises
        ------
        DataError
            The files alone exceed the cache (raise ``cache_mb``), or a file is missing or
            failed its checksum twice.
        """
        if self.cache is None:
            assert isinstance(self.store, LocalObjectStore)
            return [self.store.path(f"{dataset}/{e.path}") for e in entries]
        self.release()
        unique = list({e.sha256: e for e in entries}.values())
        self.cache.check_fits(sum(e.size for e in unique),
                              f"this job's data ({dataset}, {len(unique)} files)")
        cold = sum(not self.cache.contains(e.sha256, e.size) for e in unique)
        pins = self._pin_all([partial(self._acquire, dataset, e) for e in unique], cold)
        return [pins[(e.sha256, None)].path for e in entries]

    def fetches(self, dataset: str, entries: Sequence[FileEntry],
                groups: Sequence[Sequence[int]]) -> list[Fetch]:
        """Ranged readers of ``entries`` (files with chunk indexes), to read ``groups`` of each.

        A local lake is read in place. From a remote lake each file comes through the cache
        whole (when cached already, or when the groups are most of it) or as just the
        needed row groups, fetched when cold with one ranged GET per run of adjacent groups
        and cached one entry per group (``group_cache.py``). Either way the entries stay
        pinned until :meth:`release` or the next call; the readers read only those.

        Raises
        ------
        DataError
            As :meth:`local_paths`; a row group that fails its page checksums twice names
            its file.
        """
        if self.cache is None:
            return [file_fetch(p) for p in self.local_paths(dataset, entries)]
        self.release()
        cache = self.cache
        needed: dict[str, tuple[FileEntry, set[int]]] = {}
        for entry, gs in zip(entries, groups, strict=True):
            needed.setdefault(entry.sha256, (entry, set()))[1].update(gs)
        tasks: list[_Task] = []
        cold = total = 0
        by_group: dict[str, list[int]] = {}  # files read as row groups: which ones
        for sha, (entry, wanted) in needed.items():
            index = entry.index
            whole = cache.contains(sha, entry.size)
            missing = [] if whole or index is None else cold_groups(cache, entry, sorted(wanted))
            if whole or index is None or not prefer_groups(entry, missing):
                tasks.append(partial(self._acquire, dataset, entry))
                cold += not whole
                total += entry.size
                continue
            by_group[sha] = sorted(wanted)
            runs = group_runs(index, missing)
            tasks += [partial(self._acquire_groups, dataset, entry, [run]) for run in runs]
            if warm := [[g] for g in by_group[sha] if g not in missing]:
                tasks.append(partial(self._acquire_groups, dataset, entry, warm))
            cold += len(runs)
            total += sum(group_span(index, g)[1] - group_span(index, g)[0] for g in wanted)
        cache.check_fits(total, f"this job's data ({dataset}, {len(needed)} files)")
        pins = self._pin_all(tasks, cold)
        out: list[Fetch] = []
        for entry in entries:
            if (held := by_group.get(entry.sha256)) is None:
                out.append(file_fetch(pins[(entry.sha256, None)].path))
                continue
            index = entry.index
            assert index is not None
            out.append(groups_fetch([(*group_span(index, g), pins[(entry.sha256, g)].path)
                                     for g in held]))
        return out

    def _pin_all(self, tasks: list[_Task], cold: int) -> dict[_Tag, Pin]:
        """Run ``tasks`` (``cold`` of them download) and hold their pins for :meth:`release`."""
        assert self.cache is not None
        with self.cache.counting_batch():
            pins = self._acquire_all(tasks, cold)
        with self._lock:
            self._pins = list(pins.values())
        return pins

    def _acquire_all(self, tasks: list[_Task], cold: int) -> dict[_Tag, Pin]:
        """Pins from all ``tasks``, or none: on any failure the others are released."""
        pins: list[tuple[_Tag, Pin]] = []
        errors: list[BaseException] = []
        if cold > 1:
            # Cold files and runs of groups download in parallel (big files in parts too).
            with ThreadPoolExecutor(min(cold, _FETCH_THREADS)) as pool:
                futures = [pool.submit(task) for task in tasks]
            for future in futures:
                if (exc := future.exception()) is not None:
                    errors.append(exc)
                else:
                    pins += future.result()
        else:
            # Warm entries cost a few syscalls each: cheaper than a thread hop.
            for task in tasks:
                try:
                    pins += task()
                except BaseException as exc:
                    errors.append(exc)
                    break
        if errors:
            for _tag, pin in pins:
                pin.release()
            raise errors[0]
        return dict(pins)

    def _acquire(self, dataset: str, entry: FileEntry) -> list[tuple[_Tag, Pin]]:
        assert self.cache is not None
        key = f"{dataset}/{entry.path}"
        fill = partial(self.store.get_to_file, key, size=entry.size)
        pin = self.cache.acquire(entry.sha256, entry.size, fill, name=f"{self.store.url}/{key}")
        return [((entry.sha256, None), pin)]

    def _acquire_groups(self, dataset: str, entry: FileEntry,
                        runs: list[list[int]]) -> list[tuple[_Tag, Pin]]:
        """Pins for the row groups of ``runs`` (each: adjacent groups, filled by one GET)."""
        assert self.cache is not None
        index = entry.index
        assert index is not None
        key = f"{dataset}/{entry.path}"
        out: list[tuple[_Tag, Pin]] = []
        try:
            for run in runs:
                fetcher = GroupRun(self.store, key, index, run)
                for g in run:
                    start, end = group_span(index, g)
                    pin = self.cache.acquire(
                        group_key(entry.sha256, g), end - start, partial(fetcher.fill, g),
                        name=f"{self.store.url}/{key} (row group {g})",
                        verify=partial(verify_group, index, g))
                    out.append(((entry.sha256, g), pin))
        except BaseException:
            for _tag, pin in out:
                pin.release()
            raise
        return out

    def release(self) -> None:
        """Let the cache evict the files the last :meth:`local_paths` call pinned."""
        with self._lock:
            pins, self._pins = self._pins, []
        for pin in pins:
            pin.release()

    def sync_metadata(self, local_root: Path, dataset: str | None = None) -> int:
        """See :func:`sync_metadata`."""
        return sync_metadata(self.store, local_root, dataset)

    def close(self) -> None:
        """Release pins and the store's connections."""
        self.release()
        self.store.close()


def sync_metadata(store: ObjectStore, local_root: Path, dataset: str | None = None) -> int:
    """Mirror the metadata of ``dataset`` (or of every dataset) of ``store`` under ``local_root``.

    Metadata is every file of a dataset outside ``data/``; it is immutable once written,
    so a file already mirrored is skipped. Returns how many files were copied.
    """
    names = [dataset] if dataset else [p.rstrip("/") for p in store.list_prefixes("")]
    copied = 0
    for name in names:
        for sub in store.list_prefixes(f"{name}/"):
            if sub == f"{name}/{_DATA_DIR}":
                continue
            for key in store.list_keys(sub):
                dest = local_root / key
                if not dest.exists():
                    _write_atomic(dest, store.get(key))
                    copied += 1
    return copied


def _write_atomic(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{uuid.uuid4().hex}"  # no .json suffix: never read as a version
    try:
        with tmp.open("xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


class MirroredCatalog(Catalog):
    """A read-only catalog of a remote lake whose metadata is mirrored under ``root``."""

    def __init__(self, root: Path, store: ObjectStore) -> None:
        super().__init__(root)
        self.store = store

    def datasets(self) -> list[str]:
        """See :meth:`Catalog.datasets`; refreshes the mirror first."""
        sync_metadata(self.store, self.root)
        return super().datasets()

    def _refresh(self, dataset: str) -> None:
        sync_metadata(self.store, self.root, dataset)

    def versions(self, dataset: str) -> list[SnapshotInfo]:
        """See :meth:`Catalog.versions`; refreshes the mirror first."""
        self._refresh(dataset)
        return super().versions(dataset)

    def snapshot(self, dataset: str, version: int | None = None) -> Snapshot:
        """See :meth:`Catalog.snapshot`; a pinned version already mirrored costs no request."""
        if version is not None:
            try:
                return super().snapshot(dataset, version)
            except UnknownDatasetError:
                pass
        self._refresh(dataset)
        return super().snapshot(dataset, version)

    def write_file(self, *_args: object, **_kwargs: object) -> FileEntry:
        """Refused: write to a local lake, then ``pitwall data push``."""
        raise DataError(f"the lake {self.store.url} is read-only here; write to a local lake "
                        "and copy it with `pitwall data push`")

    commit = write_file  # type: ignore[assignment]


@dataclass(frozen=True)
class PushReport:
    """What :func:`push_dataset` copied."""

    uploaded: int
    skipped: int
    bytes: int


def push_dataset(catalog: Catalog, dataset: str, store: ObjectStore) -> PushReport:
    """Copy every version of ``dataset`` from a local ``catalog`` to ``store``.

    Data files go first, then reference files, and version files last, so a reader of
    the store never sees a version whose files (bars or reference data) are missing;
    files already there (same key, same size) are skipped.
    """
    infos = catalog.versions(dataset)  # raises a clear error for an unknown dataset
    entries = {e.path: e for i in infos for e in catalog.snapshot(dataset, i.version).files}
    root = catalog.root / dataset
    meta = sorted((p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
                   and not p.relative_to(root).as_posix().startswith(_DATA_DIR)),
                  key=lambda p: (p.relative_to(root).as_posix().startswith(_VERSIONS_DIR), p))
    there = {k: None for k in store.list_keys(f"{dataset}/")}
    uploads: list[tuple[str, Path, str | None]] = [
        (f"{dataset}/{e.path}", catalog.file_path(dataset, e), e.sha256)
        for e in entries.values()]
    todo = [u for u in uploads if u[0] not in there or store.size(u[0]) != u[1].stat().st_size]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda u: store.put(u[0], u[1], sha256=u[2]), todo))
    metas = [(f"{dataset}/{p.relative_to(root).as_posix()}", p) for p in meta]
    new_meta = [m for m in metas if m[0] not in there]
    for key, path in new_meta:
        store.put(key, path)
    sent = sum(u[1].stat().st_size for u in todo) + sum(p.stat().st_size for _, p in new_meta)
    return PushReport(uploaded=len(todo) + len(new_meta),
                      skipped=len(uploads) + len(metas) - len(todo) - len(new_meta), bytes=sent)
