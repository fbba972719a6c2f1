"""``helm lint --strict`` and ``values.schema.json``: the chart lints clean for every value set,
the schema is closed at every level, and bad values fail with a message naming the key."""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import pytest

from tests.chart.render import CHART, KUBE_VERSIONS, VALUE_SETS


def lint_findings(values: dict[str, Any], kube_version: str) -> list[dict[str, Any]]:
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{kube_version}.0")
    assert report["total_charts_linted"] == 1
    # Severity 1 (info) "icon is recommended" is the only finding we accept: the project has
    # no logo yet. Warnings (2) and errors (3) fail strict lint.
    return [m for m in report["messages"] if not (m["severity"] == 1 and "icon" in m["error"])] + [
        {"error": e} for e in report["errors"]
    ]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_lint_strict_is_clean(value_set: str) -> None:
    for kube_version in (KUBE_VERSIONS[0], KUBE_VERSIONS[-1]):
        assert lint_findings(VALUE_SETS[value_set], kube_version) == []


def test_lint_reports_schema_violations() -> None:
    findings = lint_findings({"injector": {"replicas": 0}}, "1.31")
    assert any("/injector/replicas" in f["error"] for f in findings)


def _walk_objects(node: Any, path: str = "#") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        types = node.get("type")
        is_object = types == "object" or (isinstance(types, list) and "object" in types)
        if is_object or "properties" in node:
            found.append((path, node))
        for key, child in node.items():
            if key in ("properties", "$defs", "patternProperties"):
                for name, sub in child.items():
                    found.extend(_walk_objects(sub, f"{path}/{key}/{name}"))
            elif key not in ("enum", "const", "default", "examples", "required"):
                found.extend(_walk_objects(child, f"{path}/{key}"))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found.extend(_walk_objects(child, f"{path}/{i}"))
    return found


def test_schema_is_closed_at_every_object_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    objects = _walk_objects(schema)
    assert len(objects) > 50
    open_objects = []
    for path, node in objects:
        extra = node.get("additionalProperties")
        if "properties" in node and extra is not False:
            open_objects.append(path)  # a record must list every key it accepts
        elif "properties" not in node and not isinstance(extra, dict):
            open_objects.append(path)  # a map must type its values
    assert open_objects == []


def test_every_default_value_is_described_by_the_schema() -> None:
    # The defaults themselves pass, and every leaf of values.yaml is a schema property.
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema({})
        defaults = chart.values
        schema = chart.schema
    assert schema is not None

    def leaves(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        for key, value in values.items():
            assert key in node.get("properties", {}), f"{path}.{key} is not in the schema"
            sub = node["properties"][key]
            if isinstance(value, dict) and "properties" in sub:
                leaves(value, sub, f"{path}.{key}")

    leaves(defaults, schema, "values")


BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"unknownKey": 1}, "additional properties 'unknownKey'"),
    ({"injector": {"replicaCount": 2}}, "/injector"),
    ({"injector": {"replicas": 0}}, "/injector/replicas"),
    ({"webhooks": {"inject": {"failurePolicy": "Maybe"}}}, "/webhooks/inject/failurePolicy"),
    ({"webhooks": {"validate": {"timeoutSeconds": 30}}}, "/webhooks/validate"),
    ({"webhooks": {"tls": {"mode": "selfSigned"}}}, "/webhooks/tls/mode"),
    (
        {"webhooks": {"namespaceLabel": {"key": "bad key!", "value": "x"}}},
        "/webhooks/namespaceLabel/key",
    ),
    ({"sidecar": {"mode": "hybrid"}}, "/sidecar/mode"),
    ({"sidecar": {"resources": {"limits": {"nvidia.com/gpu": 1}}}}, "/sidecar/resources/limits"),
    ({"sidecar": {"resources": {"requests": {"cpu": "lots"}}}}, "/sidecar/resources/requests/cpu"),
    ({"sidecar": {"adminPort": 70000}}, "/sidecar/adminPort"),
    ({"podSecurity": {"runAsUser": 0}}, "/podSecurity/runAsUser"),
    ({"podSecurity": {"privileged": True}}, "/podSecurity"),
    ({"images": {"operator": {"digest": "latest"}}}, "/images/operator/digest"),
    ({"operator": {"replicas": 3}}, "/operator"),
    ({"operator": {"watchNamespaces": ["Team_A"]}}, "/operator/watchNamespaces/0"),
    ({"operator": {"affinity": {"nodeAffinity": {"typo": {}}}}}, "/operator/affinity/nodeAffinity"),
    (
        {"operator": {"tolerations": [{"key": "a", "efect": "NoSchedule"}]}},
        "/operator/tolerations/0",
    ),
    (
        {"networkPolicy": {"injectorIngressFrom": [{"podSelectr": {}}]}},
        "/networkPolicy/injectorIngressFrom/0",
    ),
    ({"monitoring": {"podMonitor": {"interval": "often"}}}, "/monitoring/podMonitor/interval"),
    (
        {"securityBaseline": {"spec": {"waf": {"minimumMode": "block"}}}},
        "/securityBaseline/spec/waf/minimumMode",
    ),
    ({"securityBaseline": {"spec": {"floors": {}}}}, "/securityBaseline/spec"),
    (
        {"securityBaseline": {"namespaceSelector": {"matchLabel": {}}}},
        "/securityBaseline/namespaceSelector",
    ),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_bad_values_naming_the_key(values: dict[str, Any], where: str) -> None:
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError) as err:
            chart.validate_schema(values)
        # Rendering (what install/upgrade/template do) refuses the same values.
        with pytest.raises(helm.HelmValuesError):
            chart.render(values, name="wg", namespace="wardgate-system", is_install=True)
    assert where in str(err.value)


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_schema_accepts_every_value_set(value_set: str) -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(VALUE_SETS[value_set])
