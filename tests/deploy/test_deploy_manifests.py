"""The rendered manifests (docs/scale-out.md, "Manifests"): valid for two Kubernetes
versions, the policy the docs promise, the example up to date, values refused clearly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tests.deploy.schemas import VERSIONS, validate

from pitwall_executor.cli import main
from pitwall_executor.deploy import load_values, render, to_yaml
from pitwall_executor.deploy.values import ValuesError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "kubernetes" / "values.example.toml"
RENDERED = REPO / "deploy" / "kubernetes" / "example" / "manifests.yaml"
OBJECTS = render(load_values(EXAMPLE))


def _id(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def _of(kind: str) -> list[dict[str, Any]]:
    return [o for o in OBJECTS if o["kind"] == kind]


def _pod_specs() -> list[dict[str, Any]]:
    return [o["spec"]["template"]["spec"] for o in _of("Deployment")]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("obj", OBJECTS, ids=_id)
def test_every_rendered_object_validates(obj: dict[str, Any], version: str) -> None:
    validate(obj, version)


def test_the_validation_is_strict() -> None:
    """A misspelt field fails: the schemas used are the strict ones."""
    runtime = dict(_of("RuntimeClass")[0], handlr="runsc")
    with pytest.raises(Exception, match="handlr"):
        validate(runtime, VERSIONS[0])
    monitor = dict(_of("ServiceMonitor")[0])
    monitor["spec"] = dict(monitor["spec"], endpoint=[])
    with pytest.raises(Exception, match="endpoint"):
        validate(monitor, VERSIONS[0])


def test_everything_the_issue_asks_for_is_rendered() -> None:
    kinds = [o["kind"] for o in OBJECTS]
    for kind, count in (("Deployment", 2), ("HorizontalPodAutoscaler", 1),
                        ("RuntimeClass", 1), ("PodDisruptionBudget", 2),
                        ("ServiceMonitor", 2), ("ScaledObject", 1), ("Namespace", 2)):
        assert kinds.count(kind) == count, kind
    assert _of("RuntimeClass")[0]["handler"] == "runsc"
    triggers = _of("ScaledObject")[0]["spec"]["triggers"]
    assert {t["metadata"]["stream"] for t in triggers} == {"pitwall:queue:high",
                                                          "pitwall:queue:low"}
    assert {t["metadata"]["consumerGroup"] for t in triggers} == {"workers"}


def test_the_sandbox_namespace_allows_no_traffic_at_all() -> None:
    sandbox = load_values(EXAMPLE).namespaces.sandbox
    policies = [o for o in _of("NetworkPolicy") if o["metadata"]["namespace"] == sandbox]
    assert policies, "the sandbox namespace has no NetworkPolicy"
    for policy in policies:
        spec = policy["spec"]
        assert spec["podSelector"] == {}, "the policy must select every Pod"
        assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
        assert spec.get("egress", []) == [], "the sandbox namespace allows some egress"
        assert spec.get("ingress", []) == [], "the sandbox namespace allows some ingress"


def test_requests_equal_limits_in_every_container() -> None:
    for spec in _pod_specs():
        for container in spec["containers"]:
            res = container["resources"]
            assert res["requests"] == res["limits"], container["name"]


def test_platform_pods_are_locked_down() -> None:
    for spec in _pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["enableServiceLinks"] is False
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True
            assert ctx["allowPrivilegeEscalation"] is False
            assert ctx["privileged"] is False
            assert ctx["capabilities"] == {"drop": ["ALL"]}
    api = next(s for s in _pod_specs() if s["serviceAccountName"] == "pitwall-api")
    assert api["automountServiceAccountToken"] is False


def test_the_worker_may_only_manage_pods_of_the_sandbox_namespace() -> None:
    (role,) = _of("Role")
    assert role["metadata"]["namespace"] == "pitwall-sandbox"
    assert {r for rule in role["rules"] for r in rule["resources"]} == {
        "pods", "pods/attach", "pods/log"}
    assert not _of("ClusterRole") and not _of("ClusterRoleBinding")


def test_no_secret_is_written_literally() -> None:
    for spec in _pod_specs():
        for container in spec["containers"]:
            for env in container["env"]:
                assert "value" not in env, f"{env['name']} is a literal, not a Secret ref"
                assert "secretKeyRef" in env["valueFrom"]
    (config,) = _of("ConfigMap")
    assert not any(w in key.lower() for key in config["data"]
                   for w in ("password", "secret", "db_url", "queue_url"))


def test_the_example_manifests_are_up_to_date() -> None:
    assert RENDERED.read_text() == to_yaml(OBJECTS), (
        "deploy/kubernetes/example/manifests.yaml is stale; run: pitwall deploy render "
        "--values deploy/kubernetes/values.example.toml --out deploy/kubernetes/example")


def test_the_cli_renders_what_the_renderer_does(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "deploy", "render",
                                       "--values", str(EXAMPLE), "--out", "-"])
    assert result.exit_code == 0, result.output
    assert result.output == to_yaml(OBJECTS)
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "deploy", "render",
                                       "--values", str(EXAMPLE), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m" / "manifests.yaml").read_text() == to_yaml(OBJECTS)


def _bad(tmp_path: Path, text: str) -> str:
    path = tmp_path / "values.toml"
    path.write_text(EXAMPLE.read_text() + text)
    with pytest.raises(ValuesError) as err:
        load_values(path)
    return str(err.value)


def test_bad_values_are_refused_with_their_field(tmp_path: Path) -> None:
    assert "monitoring.extra: Extra inputs are not permitted" in _bad(
        tmp_path, "\n[monitoring.extra]\nreplicas = 1\n")
    path = tmp_path / "literal.toml"
    path.write_text(EXAMPLE.read_text().replace(
        'database_url = { secret = "pitwall-postgres", key = "url" }',
        'database_url = "postgresql://pitwall:hunter2@db/pitwall"'))
    with pytest.raises(ValuesError, match=r"services\.database_url"):
        load_values(path)
    path.write_text(EXAMPLE.read_text().replace('sandbox = "pitwall-sandbox"',
                                                'sandbox = "pitwall"'))
    with pytest.raises(ValuesError, match="must differ"):
        load_values(path)
    path.write_text("name = [")
    with pytest.raises(ValuesError, match="not valid TOML"):
        load_values(path)
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "deploy", "render",
                                       "--values", str(path)])
    assert result.exit_code != 0 and "not valid TOML" in result.output
