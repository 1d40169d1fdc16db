"""Configuration: embedded defaults (docs/architecture.md §7), a TOML file, and
``PITWALL_*`` env vars.

Precedence, lowest first: built-in defaults, the config file (``$PITWALL_CONFIG``, else
``./pitwall.toml``, else ``~/.config/pitwall/config.toml``), then environment variables
(``PITWALL_DB_URL``, ``PITWALL_SANDBOX``, ``PITWALL_LIMITS__TIMEOUT_S`` …; a double
underscore reaches into a nested section).
"""

from __future__ import annotations

import getpass
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pitwall.models import CostsPreset, Limits

SandboxKind = Literal["gvisor", "docker", "local", "kubernetes"]
ENV_PREFIX = "PITWALL_"
#: ``PITWALL_*`` variables that are not settings of the deployment: where the file is, and
#: who and where a *client* is (the SDK's ``Client``, the CLI's researcher; JupyterLab's
#: server extension exports the first two to every kernel it starts). ``TEST_*`` belong
#: to the test suite and benchmarks. Any other unknown ``PITWALL_*`` is a typo: refused.
NOT_SETTINGS = frozenset({"CONFIG", "API_URL", "TOKEN", "RESEARCHER"})
# S3 bucket naming rules: 3-63 lowercase letters, digits, dots and hyphens.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _default_data_dir() -> Path:
    """The one default of every local entry point (``pitwall``, ``make demo``, ``make
    lab``, the lab's kernels): ``$XDG_DATA_HOME/pitwall``, else ``~/.local/share/pitwall``;
    for root, ``/var/lib/pitwall``: the sandbox never mounts anything from under /root (a
    host system path, sandbox/oci.py ``check_source``), and root's home is not readable
    by the sandbox's user either."""
    base = os.environ.get("XDG_DATA_HOME")
    if base:
        return Path(base) / "pitwall"
    if os.geteuid() == 0:
        return Path("/var/lib/pitwall")
    return Path.home() / ".local" / "share" / "pitwall"


def researcher_name(environ: dict[str, str] | None = None) -> str:
    """Who local runs belong to, the one identity rule of a machine: ``PITWALL_RESEARCHER``,
    else the OS user. ``pitwall run``, ``pitwall serve`` and JupyterLab (the button,
    ``%%backtest``, ``pitwall.Client`` in its kernels) all submit as this researcher, so
    every local run shows in the lab's panel. Characters a researcher name cannot hold
    become ``-``."""
    env = os.environ if environ is None else environ
    name = env.get(ENV_PREFIX + "RESEARCHER") or getpass.getuser()
    return re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:64] or "researcher"


class KubernetesSandbox(BaseModel):
    """Where ``sandbox = "kubernetes"`` runs job Pods (docs/scale-out.md, "Kubernetes backend";
    rendered into the workers' ConfigMap by ``pitwall deploy render``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = "pitwall-sandbox"
    image: str = "pitwall/sandbox:TAG"
    runtime_class: str = "gvisor"
    stage_mb: Annotated[int, Field(ge=16, le=8192)] = 512
    start_allowance_s: Annotated[int, Field(ge=10, le=3600)] = 120


class Config(BaseModel):
    """Every setting of a Pitwall deployment, with the embedded mode as the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Field(default_factory=_default_data_dir)
    db_url: str | None = None
    queue_url: str = "memory://"
    store_url: str | None = None  # artifacts: a folder, file:///folder or s3://bucket[/prefix]
    lake_url: str | None = None
    sandbox: SandboxKind = "gvisor"
    runsc: str = "runsc"
    kubernetes: KubernetesSandbox = KubernetesSandbox()
    limits: Limits = Limits()
    workers: Annotated[int, Field(ge=1, le=256)] = 1
    max_bundle_mb: Annotated[int, Field(ge=1, le=1024)] = 16
    cache_mb: Annotated[int, Field(ge=16)] = 10 * 1024
    # For an s3:// lake_url: an S3-compatible endpoint (MinIO, moto…) and region; None = AWS.
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    # Warm sandboxes kept per worker process (gvisor backend); 0 turns the pool off.
    pool_size: Annotated[int, Field(ge=0, le=64)] = 0
    # A run the lookahead audit flags fails instead of completing with a warning.
    audit_fail: bool = False
    # The lookahead audit's budget, in full-data strategy calls (the bars fed to the
    # strategy over all its re-runs, as a multiple of the run's bars): past it, random
    # cuts are thinned at random (the same way for the same run) and the verdict counts
    # only what was checked. 0 lifts the limit (every planned cut is checked).
    audit_budget: Annotated[float, Field(ge=0, le=1000)] = 8.0
    # The costs preset (pitwall.models.COSTS_PRESETS) a submitted spec that names none
    # gets, stored in the job's spec (docs/engine-conventions.md §2.3); a rerun keeps
    # the stored one.
    default_costs_preset: CostsPreset = "retail"
    # Orchestration (workers, recovery, quota): see pitwall_executor.orchestration.process.
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3  # deaths or outages before FAILED
    max_running_per_researcher: Annotated[int, Field(ge=1)] | None = None  # None: no quota
    stale_after_s: Annotated[float, Field(gt=0, le=3600)] = 15.0  # heartbeat silence = dead
    grace_s: Annotated[float, Field(ge=0, le=24 * 3600)] = 30.0  # SIGTERM: finish or hand back

    @field_validator("store_url")
    @classmethod
    def _check_store_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if url.startswith("s3://"):
            bucket = url.removeprefix("s3://").partition("/")[0]
            if not _BUCKET.fullmatch(bucket):
                raise ValueError(f"{url!r} does not name a valid S3 bucket; write "
                                 "s3://bucket[/prefix] with a bucket name of 3-63 lowercase "
                                 "letters, digits, dots or hyphens")
            return url
        _local_path(url)
        return url

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'pitwall.db'}"

    @property
    def lake_dir(self) -> Path:
        if self.lake_url and self.lake_url.startswith("s3://"):
            # A bucket lake: its catalog metadata is mirrored here, its data files cached.
            return self.data_dir / "lake-mirror" / self.lake_url.removeprefix("s3://")
        return _local_path(self.lake_url) if self.lake_url else self.data_dir / "lake"

    @property
    def cache_dir(self) -> Path:
        """The worker's file cache of an s3:// lake (bounded by ``cache_mb``)."""
        return self.data_dir / "cache"

    @property
    def artifacts_dir(self) -> Path:
        """Where the worker writes result files: the store itself, or the staging folder
        of an s3:// store (files leave it once uploaded and recorded)."""
        if self.store_url and self.store_url.startswith("s3://"):
            return self.data_dir / "artifacts-staging"
        return _local_path(self.store_url) if self.store_url else self.data_dir / "artifacts"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"


def _local_path(url: str) -> Path:
    if url.startswith("file://"):
        return Path(url.removeprefix("file://"))
    if "://" in url:
        raise ValueError(f"{url!r} is not a supported location; use a local path, a "
                         "file:///path URL or an s3://bucket/prefix URL")
    return Path(url)


def _config_file(environ: dict[str, str]) -> Path | None:
    explicit = environ.get(ENV_PREFIX + "CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise FileNotFoundError(f"PITWALL_CONFIG points at {path}, which does not exist")
        return path
    for candidate in (Path("pitwall.toml"), Path.home() / ".config" / "pitwall" / "config.toml"):
        if candidate.is_file():
            return candidate
    return None


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in environ.items():
        name = key.removeprefix(ENV_PREFIX)
        if name == key or name in NOT_SETTINGS or name.startswith("TEST_"):
            continue
        path = name.lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(environ: dict[str, str] | None = None, **overrides: Any) -> Config:
    """Load the configuration from the file, the environment, then ``overrides``."""
    env = dict(os.environ if environ is None else environ)
    data: dict[str, Any] = {}
    path = _config_file(env)
    if path is not None:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    data = _merge(data, _env_overrides(env))
    data = _merge(data, {k: v for k, v in overrides.items() if v is not None})
    return Config.model_validate(data)
