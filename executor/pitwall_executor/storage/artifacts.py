"""The artifact store: a job's result files, kept per attempt, in a local folder or in S3.

The worker writes an attempt's files under ``<root>/<job>/attempt-<n>/`` (for S3, a local
staging folder), describes each one (for S3, uploads it to
``<prefix>/<job>/attempt-<n>/<name>`` with its sha256 verified), and only the completion
that wins the attempt fence records those rows in the metadata store. So a stale
attempt's files are never referenced: the worker that lost removes them (staged copies
and uploaded objects alike), and the winner drops its staging once the rows are recorded.

A recorded artifact is read back by its URI (``file://`` or ``s3://``) with
:func:`read_artifact`, whatever store the deployment uses now.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlparse

from pitwall.errors import InfrastructureError
from pitwall_executor.storage.objectstore import (
    ObjectNotFoundError,
    ObjectStoreError,
    sha256_bytes,
    sha256_file,
)

if TYPE_CHECKING:
    from pitwall_executor.config import Config
    from pitwall_executor.storage.s3 import S3ObjectStore

__all__ = [
    "ArtifactError",
    "ArtifactMissingError",
    "ArtifactStore",
    "ArtifactUnavailableError",
    "LocalArtifactStore",
    "S3ArtifactStore",
    "open_artifact_store",
    "read_artifact",
]

log = logging.getLogger(__name__)
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class ArtifactError(InfrastructureError):
    """An artifact could not be stored or read."""

    rerun_when = "the artifact store is reachable again"


class ArtifactMissingError(ArtifactError, LookupError):
    """The metadata store records an artifact whose bytes are gone."""


class ArtifactUnavailableError(ArtifactError):
    """The artifact store failed (unreachable, or the bytes are not the recorded ones)."""


class ArtifactStore(Protocol):
    """Where result files go (docs/architecture.md §4 ``ArtifactStore``); the worker's only
    view of it."""

    def attempt_dir(self, job_id: str, attempt: int) -> Path:
        """The local folder the worker writes the attempt's files into (created)."""
        ...

    def describe(self, path: Path) -> dict[str, Any]:
        """Store one file of an attempt; its metadata row {name, uri, sha256, size}."""
        ...

    def committed(self, job_id: str, attempt: int) -> None:
        """The attempt's rows are recorded: drop whatever was only kept to store them."""
        ...

    def discard(self, job_id: str, attempt: int) -> None:
        """Remove everything of an attempt whose rows will never be recorded."""
        ...


def _attempt_key(job_id: str, attempt: int) -> str:
    # The worker writes only here: an id that could name a path elsewhere is a bug.
    if not _SAFE_ID.fullmatch(job_id) or ".." in job_id or attempt < 0:
        raise ValueError(f"refusing artifact path for job {job_id!r} attempt {attempt}")
    return f"{job_id}/attempt-{attempt}"


class LocalArtifactStore:
    """Artifacts in a local folder (the embedded default)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def attempt_dir(self, job_id: str, attempt: int) -> Path:
        """See :meth:`ArtifactStore.attempt_dir`."""
        path = self.root / _attempt_key(job_id, attempt)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def describe(self, path: Path) -> dict[str, Any]:
        """The metadata row of one artifact file (it stays where it is)."""
        return {"name": path.name, "uri": path.resolve().as_uri(), "sha256": sha256_file(path),
                "size": path.stat().st_size}

    def committed(self, job_id: str, attempt: int) -> None:
        """Nothing to do: the files in the folder are the artifacts."""

    def discard(self, job_id: str, attempt: int) -> None:
        """See :meth:`ArtifactStore.discard`."""
        shutil.rmtree(self.root / _attempt_key(job_id, attempt), ignore_errors=True)


class S3ArtifactStore:
    """Artifacts as objects under ``s3://bucket/prefix``, staged in a local folder first."""

    def __init__(self, url: str, staging: Path, *, endpoint_url: str | None = None,
                 region: str | None = None) -> None:
        bucket, prefix = _split_s3(url)
        self.url = url
        self.bucket = bucket
        self.prefix = prefix
        self.staging = staging
        self._objects = _bucket_store(bucket, endpoint_url, region)

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def attempt_dir(self, job_id: str, attempt: int) -> Path:
        """See :meth:`ArtifactStore.attempt_dir` (a staging folder here)."""
        path = self.staging / _attempt_key(job_id, attempt)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def describe(self, path: Path) -> dict[str, Any]:
        """Upload one staged file (sha256 verified by the store); its metadata row."""
        try:
            relative = path.resolve().relative_to(self.staging.resolve()).as_posix()
        except ValueError:
            raise ValueError(f"{path} is not in the artifact staging folder {self.staging}; "
                             "write artifacts only into attempt_dir()") from None
        key = self._key(relative)
        sha256 = sha256_file(path)
        try:
            self._objects.put(key, path, sha256=sha256)
        except ObjectNotFoundError as exc:  # a PUT finds no object only without a bucket
            raise ArtifactUnavailableError(
                f"could not upload {path.name}: the bucket {self.bucket!r} of store_url "
                f"{self.url} does not exist; create it or fix store_url") from exc
        except ObjectStoreError as exc:
            raise ArtifactUnavailableError(f"could not upload {path.name} to {self.url}: "
                                           f"{exc}") from exc
        return {"name": path.name, "uri": f"s3://{self.bucket}/{key}", "sha256": sha256,
                "size": path.stat().st_size}

    def committed(self, job_id: str, attempt: int) -> None:
        """The objects are the artifacts now: remove the staged copies."""
        self._unstage(job_id, attempt)

    def discard(self, job_id: str, attempt: int) -> None:
        """Remove the staged files and every object uploaded for the attempt."""
        relative = _attempt_key(job_id, attempt)
        self._unstage(job_id, attempt)
        try:
            for key in self._objects.list_keys(self._key(relative) + "/"):
                self._objects.delete(key)
        except ObjectStoreError as exc:  # never referenced, so only storage is lost
            log.warning("could not delete the objects of stale attempt %s in %s (%s)",
                        relative, self.url, exc)

    def _unstage(self, job_id: str, attempt: int) -> None:
        shutil.rmtree(self.staging / _attempt_key(job_id, attempt), ignore_errors=True)
        with contextlib.suppress(OSError):  # other attempts of the job may still be there
            (self.staging / job_id).rmdir()


def open_artifact_store(config: Config) -> LocalArtifactStore | S3ArtifactStore:
    """The artifact store ``config.store_url`` names (a local folder by default)."""
    if config.store_url and config.store_url.startswith("s3://"):
        return S3ArtifactStore(config.store_url, config.artifacts_dir,
                               endpoint_url=config.s3_endpoint_url, region=config.s3_region)
    return LocalArtifactStore(config.artifacts_dir)


def read_artifact(uri: str, config: Config, *, sha256: str | None = None) -> bytes:
    """The bytes of a recorded artifact (``file://`` or ``s3://``); with ``sha256``, checked.

    Raises :class:`ArtifactMissingError` when the bytes are gone and
    :class:`ArtifactUnavailableError` when the store fails or holds other bytes.
    """
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactMissingError(f"{path} is recorded but no longer exists; the artifact "
                                       "folder was cleaned or moved. Rerun the job") from None
        if sha256 is not None and sha256_bytes(data) != sha256:
            raise ArtifactUnavailableError(f"{path} is not the file that was recorded (its "
                                           "sha256 differs); rerun the job")
        return data
    if parsed.scheme == "s3":
        bucket, key = _split_s3(uri)
        store = _bucket_store(bucket, config.s3_endpoint_url, config.s3_region)
        try:
            return store.get(key, sha256=sha256)
        except ObjectNotFoundError:
            raise ArtifactMissingError(f"{uri} is recorded but the object no longer exists; "
                                       "it was deleted from the bucket. Rerun the job") from None
        except ObjectStoreError as exc:
            raise ArtifactUnavailableError(f"could not read {uri}: {exc}") from exc
    raise ArtifactMissingError(f"{uri!r} is not a file:// or s3:// artifact URI")


def _split_s3(url: str) -> tuple[str, str]:
    bucket, _, rest = url.removeprefix("s3://").partition("/")
    return bucket, rest.strip("/")


@functools.cache
def _bucket_store(bucket: str, endpoint_url: str | None, region: str | None) -> S3ObjectStore:
    # One client (and loop thread) per bucket for the process: the API reads many artifacts.
    from pitwall_executor.storage.s3 import S3ObjectStore

    return S3ObjectStore(bucket, endpoint_url=endpoint_url, region=region)
