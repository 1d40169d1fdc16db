"""The pieces of one deployment, built from the configuration (docs/architecture.md §7)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from pitwall.bundle import load_bundle
from pitwall.errors import DataMismatchError
from pitwall.models import BacktestSpec, resolve_costs_preset
from pitwall_executor.config import Config
from pitwall_executor.datalake.catalog import Catalog
from pitwall_executor.datalake.lake_files import LakeFiles
from pitwall_executor.datalake.planner import validate_request
from pitwall_executor.datalake.snapshot import Snapshot
from pitwall_executor.jobs.queue import JobQueue
from pitwall_executor.jobs.redis_queue import make_queue
from pitwall_executor.jobs.store import MetadataStore
from pitwall_executor.jobs.sweeps import SWEEP_PRIORITY
from pitwall_executor.sandbox import SandboxBackend, make_backend
from pitwall_executor.storage.artifacts import ArtifactStore, open_artifact_store

log = logging.getLogger(__name__)


@dataclass
class Stack:
    """Configuration plus the store, queue, catalog, artifacts and sandbox it names."""

    config: Config
    store: MetadataStore
    queue: JobQueue
    catalog: Catalog
    artifacts: ArtifactStore
    _backend: SandboxBackend | None = field(default=None, repr=False)
    lake: LakeFiles | None = None  # local paths of lake files (via the cache for s3://)
    # Worker threads of one process (pitwall serve --workers N) race to build the backend.
    _backend_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_config(cls, config: Config) -> Stack:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        lake = LakeFiles.from_config(config)
        return cls(
            config=config,
            store=MetadataStore(config.database_url),
            queue=make_queue(config.queue_url),
            catalog=lake.catalog(config.lake_dir),
            artifacts=open_artifact_store(config),
            lake=lake,
        )

    @property
    def backend(self) -> SandboxBackend:
        # Built on first use: submitting a job must not need a sandbox runtime.
        with self._backend_lock:
            if self._backend is None:
                self._backend = make_backend(self.config)
            return self._backend

    def submit(self, spec: BacktestSpec, bundle: bytes, *, researcher: str,
               stored: bool = False) -> str:
        """Validate everything that can be checked before running, then queue the job.

        A spec that names no costs preset gets the deployment's ``default_costs_preset``,
        stored in the job's spec with its values (:func:`pitwall.models.resolve_costs_preset`);
        ``stored`` is a stored job's spec (a rerun), queued as it is.

        Raises :class:`pitwall.errors.BundleError` or :class:`pitwall.errors.DataError`
        and writes nothing when the bundle or the data request is bad.
        """
        pinned, sha256 = self._check(spec if stored else self.resolve(spec), bundle)
        job_id = self.store.create_job(
            spec=pinned, researcher=researcher, bundle=bundle, bundle_sha256=sha256,
            data_version=pinned.version,
        )
        self._enqueue(job_id, 0)
        return job_id

    def submit_sweep(self, spec: BacktestSpec, bundle: bytes, grid: dict[str, list[Any]], *,
                     researcher: str) -> str:
        """One run of ``bundle`` per point of ``grid`` (parameter → values), as child jobs
        of a sweep whose id is returned; the children queue behind interactive runs.

        Raises :class:`pitwall_executor.jobs.sweeps.SweepError` for a bad grid, and the errors
        of :meth:`submit` for a bad bundle or data request; writes nothing then.
        """
        pinned, sha256 = self._check(self.resolve(spec), bundle)
        parent, children = self.store.create_sweep(
            spec=pinned, researcher=researcher, bundle=bundle, bundle_sha256=sha256,
            data_version=pinned.version, grid=grid)
        for child in children:
            self._enqueue(child, SWEEP_PRIORITY)
        return parent

    def resolve(self, spec: BacktestSpec) -> BacktestSpec:
        """``spec`` with this deployment's default costs preset applied where it names
        none (docs/engine-conventions.md §2.3), as a new job stores it."""
        return resolve_costs_preset(spec, self.config.default_costs_preset)

    def _check(self, spec: BacktestSpec, bundle: bytes) -> tuple[BacktestSpec, str]:
        checked = load_bundle(bundle, max_bytes=self.config.max_bundle_mb * 2**20)
        snapshot = self.catalog.snapshot(spec.dataset, spec.version)
        validate_request(snapshot, with_benchmark(spec), spec.start, spec.end)
        check_data_identity(spec, snapshot)
        return spec.model_copy(update={"version": snapshot.version,
                                       "data_digest": snapshot.content_digest}), checked.sha256

    def _enqueue(self, job_id: str, priority: int) -> None:
        try:
            self.queue.enqueue(job_id, priority=priority)
        except Exception as exc:  # the job is committed PENDING: recovery will enqueue it
            log.warning("job %s is saved but could not be queued (%s); the recovery loop "
                        "re-enqueues it", job_id, exc)


def with_benchmark(spec: BacktestSpec) -> list[str]:
    """The symbols a job reads: its universe, and its benchmark when outside it."""
    outside = spec.benchmark is not None and spec.benchmark not in spec.universe
    return [*spec.universe, spec.benchmark] if outside and spec.benchmark else spec.universe


def check_data_identity(spec: BacktestSpec, snapshot: Snapshot) -> None:
    """Refuse ``snapshot`` when ``spec`` pins the digest of other data under the same name
    (a rerun on another lake, a lake regenerated with another seed)."""
    if spec.data_digest is not None and spec.data_digest != snapshot.content_digest:
        raise DataMismatchError(
            f"{snapshot.label} here holds other data than the run being repeated read: "
            f"its content digest is {snapshot.content_digest}, the run recorded "
            f"{spec.data_digest}. Point PITWALL_DATA_DIR (or the lake) at the data the "
            "first run used, or submit a new run to use this data.")
