"""Schema checks for tests/deploy: the Kubernetes OpenAPI schemas of two versions
(``kubernetes-validate``, strict: unknown fields are errors), and minimal JSON schemas of
the CRDs they do not hold, written from the CRDs' documented fields (docs/scale-out.md,
"What is proved here and what needs a cluster")."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate

#: Two supported Kubernetes versions every object must validate against.
VERSIONS = ("1.31.0", "1.34.0")

_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"}
_META = {"type": "object", "required": ["name", "namespace"],
         "properties": {"name": _NAME, "namespace": _NAME,
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}}}}
_SELECTOR = {"type": "object", "required": ["matchLabels"], "additionalProperties": False,
             "properties": {"matchLabels": {"type": "object",
                                            "additionalProperties": {"type": "string"}}}}
_TARGET = {"type": "object", "required": ["name"], "additionalProperties": False,
           "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                          "name": _NAME}}


def _crd(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
            "additionalProperties": False,
            "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind},
                           "metadata": _META, "spec": spec}}


#: Prometheus operator ServiceMonitor (monitoring.coreos.com/v1): the fields used here.
SERVICE_MONITOR = _crd("monitoring.coreos.com/v1", "ServiceMonitor", {
    "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
    "properties": {"selector": _SELECTOR, "endpoints": {
        "type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False, "required": ["port"],
            "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                           "interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"}}}}}})

#: KEDA ScaledObject (keda.sh/v1alpha1) with redis-streams triggers (KEDA's scaler docs:
#: stream, consumerGroup, lagCount; authentication through a TriggerAuthentication).
SCALED_OBJECT = _crd("keda.sh/v1alpha1", "ScaledObject", {
    "type": "object", "required": ["scaleTargetRef", "triggers"], "additionalProperties": False,
    "properties": {
        "scaleTargetRef": _TARGET,
        "minReplicaCount": {"type": "integer", "minimum": 0},
        "maxReplicaCount": {"type": "integer", "minimum": 1},
        "pollingInterval": {"type": "integer", "minimum": 1},
        "cooldownPeriod": {"type": "integer", "minimum": 0},
        "triggers": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
            "properties": {
                "type": {"const": "redis-streams"},
                "authenticationRef": {"type": "object", "required": ["name"],
                                      "additionalProperties": False,
                                      "properties": {"name": _NAME}},
                "metadata": {"type": "object", "required": ["stream", "consumerGroup",
                                                            "lagCount"],
                             "additionalProperties": False,
                             "properties": {"stream": {"type": "string"},
                                            "consumerGroup": {"type": "string"},
                                            "lagCount": {"type": "string",
                                                         "pattern": "^[0-9]+$"}}}}}}}})

#: KEDA TriggerAuthentication (keda.sh/v1alpha1), Secret references only.
TRIGGER_AUTHENTICATION = _crd("keda.sh/v1alpha1", "TriggerAuthentication", {
    "type": "object", "required": ["secretTargetRef"], "additionalProperties": False,
    "properties": {"secretTargetRef": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["parameter", "name", "key"],
        "additionalProperties": False,
        "properties": {"parameter": {"enum": ["address", "host", "port", "username",
                                              "password"]},
                       "name": _NAME, "key": {"type": "string"}}}}}})

CRD_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR, "ScaledObject": SCALED_OBJECT,
               "TriggerAuthentication": TRIGGER_AUTHENTICATION}


def validate(obj: dict[str, Any], version: str) -> None:
    """Raise if ``obj`` is not valid for Kubernetes ``version`` (or its CRD's schema)."""
    schema = CRD_SCHEMAS.get(obj["kind"])
    if schema is not None:
        jsonschema.validate(obj, schema)
        return
    kubernetes_validate.validate(obj, version, strict=True)
