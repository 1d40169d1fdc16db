"""The pieces of one deployment, built from the configuration (DESIGN.md §7)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pitwall.bundle import load_bundle
from pitwall.models import BacktestSpec
from pitwall_executor.artifacts import LocalArtifactStore
from pitwall_executor.config import Config
from pitwall_executor.datalake.catalog import Catalog
from pitwall_executor.datalake.planner import validate_request
from pitwall_executor.queue import JobQueue
from pitwall_executor.redis_queue import make_queue
from pitwall_executor.sandbox import SandboxBackend, make_backend
from pitwall_executor.store import MetadataStore


@dataclass
class Stack:
    """Configuration plus the store, queue, catalog, artifacts and sandbox it names."""

    config: Config
    store: MetadataStore
    queue: JobQueue
    catalog: Catalog
    artifacts: LocalArtifactStore
    _backend: SandboxBackend | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, config: Config) -> Stack:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        return cls(
            config=config,
            store=MetadataStore(config.database_url),
            queue=make_queue(config.queue_url),
            catalog=Catalog(config.lake_dir),
            artifacts=LocalArtifactStore(config.artifacts_dir),
        )

    @property
    def backend(self) -> SandboxBackend:
        # Built on first use: submitting a job must not need a sandbox runtime.
        if self._backend is None:
            self._backend = make_backend(self.config)
        return self._backend

    def submit(self, spec: BacktestSpec, bundle: bytes, *, researcher: str) -> str:
        """Validate everything that can be checked before running, then queue the job.

        Raises :class:`pitwall.errors.BundleError` or :class:`pitwall.errors.DataError`
        and writes nothing when the bundle or the data request is bad.
        """
        checked = load_bundle(bundle, max_bytes=self.config.max_bundle_mb * 2**20)
        snapshot = self.catalog.snapshot(spec.dataset, spec.version)
        validate_request(snapshot, spec.universe, spec.start, spec.end)
        pinned = spec.model_copy(update={"version": snapshot.version})
        job_id = self.store.create_job(
            spec=pinned, researcher=researcher, bundle=bundle, bundle_sha256=checked.sha256,
            data_version=snapshot.version,
        )
        self.queue.enqueue(job_id)
        return job_id
