"""The values of a Kubernetes deployment: one strict, typed model loaded from TOML.

Every credential is a reference to a Kubernetes Secret (``{secret = "...", key = "..."}``),
never a literal: the values file can live in a repository. Unknown keys are refused, so a
typo is an error, not a silently ignored setting (docs/scale-out.md, "Manifests").
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# RFC 1123 labels (namespaces, object names) and Kubernetes resource quantities.
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$"
DnsLabel = Annotated[str, Field(pattern=_DNS_LABEL)]
Quantity = Annotated[str, Field(pattern=_QUANTITY)]
# An image reference without a registry is fine; a tag or digest is required so a
# rollout is explicit.
Image = Annotated[str, Field(pattern=r"^[a-z0-9./_-]+(:[A-Za-z0-9._-]+|@sha256:[0-9a-f]{64})$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Strict):
    """A key of a Secret in the platform namespace."""

    secret: DnsLabel
    key: Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$")]


class Resources(_Strict):
    """Requests = limits (Guaranteed QoS)."""

    cpu: Quantity
    memory: Quantity


class Images(_Strict):
    executor: Image = "pitwall/executor:TAG"
    sandbox: Image = "pitwall/sandbox:TAG"
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


class Namespaces(_Strict):
    platform: DnsLabel = "pitwall"
    sandbox: DnsLabel = "pitwall-sandbox"

    @model_validator(mode="after")
    def _apart(self) -> Namespaces:
        if self.platform == self.sandbox:
            raise ValueError("the sandbox namespace must differ from the platform's: its "
                             "NetworkPolicy denies all traffic")
        return self


class Api(_Strict):
    port: Annotated[int, Field(ge=1024, le=65535)] = 8080
    min_replicas: Annotated[int, Field(ge=1, le=100)] = 2
    max_replicas: Annotated[int, Field(ge=1, le=100)] = 6
    target_cpu_percent: Annotated[int, Field(ge=10, le=100)] = 70
    resources: Resources = Resources(cpu="500m", memory="512Mi")

    @model_validator(mode="after")
    def _bounds(self) -> Api:
        if self.min_replicas > self.max_replicas:
            raise ValueError("api.min_replicas is above api.max_replicas")
        return self


class Workers(_Strict):
    min_replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    max_replicas: Annotated[int, Field(ge=1, le=1000)] = 20
    slots: Annotated[int, Field(ge=1, le=256)] = 4  # jobs a worker Pod runs at once
    health_port: Annotated[int, Field(ge=1024, le=65535)] = 9100
    grace_s: Annotated[int, Field(ge=0, le=3600)] = 30
    # KEDA: one more worker replica per ``lag_threshold`` entries not yet delivered.
    lag_threshold: Annotated[int, Field(ge=1, le=100_000)] = 8
    polling_s: Annotated[int, Field(ge=5, le=600)] = 15
    cooldown_s: Annotated[int, Field(ge=30, le=3600)] = 300
    resources: Resources = Resources(cpu="1", memory="1Gi")

    @model_validator(mode="after")
    def _bounds(self) -> Workers:
        if self.min_replicas > self.max_replicas:
            raise ValueError("workers.min_replicas is above workers.max_replicas")
        return self


class Sandbox(_Strict):
    runtime_class: DnsLabel = "gvisor"
    handler: DnsLabel = "runsc"  # the containerd runtime handler on the nodes
    stage_mb: Annotated[int, Field(ge=16, le=8192)] = 512
    start_allowance_s: Annotated[int, Field(ge=10, le=3600)] = 120
    # Nodes that carry the handler (e.g. a label the gVisor node pool sets).
    node_selector: dict[str, str] = {}
    # Cap of the whole sandbox namespace (ResourceQuota).
    quota_cpu: Quantity = "64"
    quota_memory: Quantity = "128Gi"
    quota_pods: Annotated[int, Field(ge=1, le=100_000)] = 64


class Services(_Strict):
    """PostgreSQL, Redis and S3 by configuration: URLs from Secrets, buckets by name."""

    database_url: SecretRef
    redis_url: SecretRef
    # KEDA's redis-streams scaler wants host:port (and a password), not a URL.
    redis_address: SecretRef
    redis_password: SecretRef | None = None
    store_url: Annotated[str, Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")]
    lake_url: Annotated[str, Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")]
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: SecretRef | None = None
    s3_secret_access_key: SecretRef | None = None
    queue_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]+$")] = "pitwall"
    # Where the API and workers may connect (CIDRs of the database, Redis, S3 endpoints).
    egress_cidrs: list[Annotated[str, Field(pattern=r"^[0-9a-f.:]+/[0-9]{1,3}$")]] = []

    @model_validator(mode="after")
    def _pairs(self) -> Services:
        if (self.s3_access_key_id is None) != (self.s3_secret_access_key is None):
            raise ValueError("give both services.s3_access_key_id and "
                             "services.s3_secret_access_key, or neither (workload identity)")
        return self


class Monitoring(_Strict):
    service_monitor: bool = True
    interval: Annotated[str, Field(pattern=r"^[0-9]+(s|m)$")] = "30s"
    release_label: str | None = None  # the Prometheus operator's selector, if it has one


class Values(_Strict):
    """Everything ``pitwall deploy render`` needs (docs/scale-out.md, "Manifests")."""

    name: DnsLabel = "pitwall"
    images: Images = Images()
    namespaces: Namespaces = Namespaces()
    api: Api = Api()
    workers: Workers = Workers()
    sandbox: Sandbox = Sandbox()
    services: Services
    monitoring: Monitoring = Monitoring()


class ValuesError(ValueError):
    """A values file that cannot be used, with every problem on its own line."""


def load_values(path: Path) -> Values:
    """Read and check a values file; :class:`ValuesError` names each bad field."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ValuesError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValuesError(f"{path} is not valid TOML: {exc}") from exc
    try:
        return Values.model_validate(data)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
                 for err in exc.errors()]
        raise ValuesError(f"{path} has {len(lines)} bad value(s):\n" + "\n".join(lines)) from exc

