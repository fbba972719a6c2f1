"""Generated CRDs and rendered objects are valid Kubernetes objects (1.29-1.33); examples and
the status the operator writes validate against the CRD schemas; the ConfigMap's digest is
the digest the sidecar computes when it loads the file."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.conftest import ROOT
from wardgate.config import load_policy_text
from wardgate.config.baseline import SecurityBaselineSpec
from wardgate_operator.crds import all_crds, structural
from wardgate_operator.evaluation import evaluate, status_for
from wardgate_operator.models import MicrogatewaySpec, parse_microgateway_spec
from wardgate_operator.rendering import ANNOTATION_DIGEST, condition, merge_conditions

K8S_VERSIONS = ["1.29", "1.30", "1.31", "1.32", "1.33"]
UID = "6f1c1a3e-0000-4000-8000-000000000001"


def crd_schema(plural: str) -> dict[str, Any]:
    crd = all_crds()[f"{plural}.wardgate.dev.yaml"]
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def example(kind: str) -> dict[str, Any]:
    for path in (ROOT / "examples" / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == kind:
                return doc
    raise AssertionError(kind)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("name", sorted(all_crds()))
def test_crds_are_valid_kubernetes_objects(name, version):
    kubernetes_validate.validate(all_crds()[name], version, strict=True)


def _walk(node: dict[str, Any], path: str = "") -> list[str]:
    """Paths of schema nodes that break structural-schema rules."""
    bad = []
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        bad.append(path or "/")
    for forbidden in (
        "$ref",
        "anyOf",
        "oneOf",
        "allOf",
        "default",
        "additionalProperties",
        "patternProperties",
    ):
        if forbidden in node and not (
            forbidden == "additionalProperties" and "properties" not in node
        ):
            bad.append(f"{path}:{forbidden}")
    for name, child in node.get("properties", {}).items():
        bad.extend(_walk(child, f"{path}.{name}"))
    if isinstance(node.get("items"), dict):
        bad.extend(_walk(node["items"], f"{path}[]"))
    if isinstance(node.get("additionalProperties"), dict):
        bad.extend(_walk(node["additionalProperties"], f"{path}{{}}"))
    return bad


@pytest.mark.parametrize("plural", ["microgateways", "securitybaselines"])
def test_crd_schemas_are_structural_and_described(plural):
    schema = crd_schema(plural)
    assert _walk(schema) == []
    spec = schema["properties"]["spec"]
    missing = [n for n, p in spec["properties"].items() if not p.get("description")]
    assert missing == []  # kubectl explain has something to say for every field


def test_microgateway_crd_carries_the_policy_schema_and_cluster_fields():
    crd = all_crds()["microgateways.wardgate.dev.yaml"]
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert {"limits", "proxy", "headers", "podSelector", "servicePort", "appPort"} <= set(
        spec["properties"]
    )
    assert set(spec["required"]) == {"podSelector"}  # ports: inferred from the pods
    assert spec["x-kubernetes-validations"][0]["rule"] == (
        "!has(self.servicePort) || (has(self.appPort) && self.servicePort != self.appPort)"
    )
    assert crd["spec"]["names"]["shortNames"] == ["mgw"]
    assert crd["spec"]["scope"] == "Namespaced"
    columns = {c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert {"Accepted", "Ready", "Propagated", "Compliant"} <= columns
    assert all_crds()["securitybaselines.wardgate.dev.yaml"]["spec"]["scope"] == "Cluster"


def test_generated_schema_is_the_models_schema():
    assert (
        structural(MicrogatewaySpec)["properties"]["limits"]
        == crd_schema("microgateways")["properties"]["spec"]["properties"]["limits"]
    )


def test_examples_validate_against_the_crd_schemas_and_the_models():
    mgw, baseline = example("Microgateway"), example("SecurityBaseline")
    jsonschema.validate(mgw, crd_schema("microgateways"))
    jsonschema.validate(baseline, crd_schema("securitybaselines"))
    parse_microgateway_spec(mgw["spec"])
    SecurityBaselineSpec.model_validate(baseline["spec"])


def _pruned(value: Any, schema: dict[str, Any]) -> Any:
    """What the API server stores: fields the structural schema does not know are dropped,
    except below ``x-kubernetes-preserve-unknown-fields``."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or not isinstance(value, dict | list):
        return value
    if isinstance(value, list):
        return [_pruned(item, schema.get("items", {})) for item in value]
    if "properties" in schema:
        return {
            k: _pruned(v, schema["properties"][k])
            for k, v in value.items()
            if k in schema["properties"]
        }
    if isinstance(schema.get("additionalProperties"), dict):
        return {k: _pruned(v, schema["additionalProperties"]) for k, v in value.items()}
    return {}


def test_api_server_pruning_keeps_nested_jwt_requirements_and_inline_openapi():
    spec = example("Microgateway")["spec"] | {
        "jwt": {
            "providers": {
                "idp": {
                    "issuer": "https://idp.example",
                    "localJwks": {"inlineString": '{"keys":[]}'},
                }
            },
            "rules": [
                {
                    "match": {"prefix": "/"},
                    "requires": {
                        "requiresAny": {
                            "requirements": [
                                {"providerName": "idp"},
                                {"requiresAll": {"requirements": [{"providerName": "idp"}]}},
                            ]
                        }
                    },
                }
            ],
        },
        "openapi": {
            "inline": {
                "openapi": "3.0.3",
                "info": {"title": "t", "version": "1"},
                "paths": {"/x": {"get": {"responses": {"200": {"description": "ok"}}}}},
            }
        },
    }
    stored = _pruned(spec, crd_schema("microgateways")["properties"]["spec"])
    assert stored["jwt"] == spec["jwt"]
    assert stored["openapi"] == spec["openapi"]


def test_crd_schema_rejects_what_the_models_reject():
    bad = example("Microgateway")
    bad["spec"]["limits"]["maxUrlBytes"] = 10
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, crd_schema("microgateways"))


def _evaluation(spec: dict[str, Any] | None = None, baselines=()):
    return evaluate(
        name="shop",
        namespace="shop",
        uid=UID,
        spec=spec or example("Microgateway")["spec"],
        baselines=list(baselines),
    )


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_rendered_configmap_is_valid(version):
    configmap = _evaluation().configmap
    assert configmap is not None
    kubernetes_validate.validate(configmap, version, strict=True)


def test_configmap_digest_is_what_the_sidecar_computes():
    evaluation = _evaluation()
    configmap = evaluation.configmap
    assert configmap is not None and evaluation.effective is not None
    loaded = load_policy_text(configmap["data"]["policy.yaml"])
    assert loaded == evaluation.effective
    assert configmap["metadata"]["annotations"][ANNOTATION_DIGEST] == loaded.digest()
    owner = configmap["metadata"]["ownerReferences"][0]
    assert owner == {
        "apiVersion": "wardgate.dev/v1alpha1",
        "kind": "Microgateway",
        "name": "shop",
        "uid": UID,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_cluster_fields_never_reach_the_policy_file():
    text = _evaluation().configmap["data"]["policy.yaml"]  # type: ignore[index]
    assert "podSelector" not in text and "servicePort" not in text


def test_status_validates_against_the_crd_status_schema():
    base = SecurityBaselineSpec.model_validate({"limits": {"maxUrlBytes": 1024}})
    evaluation = _evaluation(baselines=[("prod", base)])
    status = status_for(
        evaluation, generation=3, previous={}, kept_config=None, now="2026-01-01T00:00:00Z"
    )
    jsonschema.validate(status, crd_schema("microgateways")["properties"]["status"])
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Accepted"]["status"] == "True"
    assert conditions["BaselineCompliant"]["status"] == "False"
    assert "limits.maxUrlBytes" in conditions["BaselineCompliant"]["message"]
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])


def test_invalid_spec_names_the_field_path():
    spec = example("Microgateway")["spec"]
    spec["limits"]["maxHeadersCount"] = 0
    evaluation = _evaluation(spec)
    assert not evaluation.accepted and evaluation.configmap is None
    assert evaluation.problems[0].startswith("spec.limits.maxHeadersCount:")
    status = status_for(evaluation, generation=2, previous={}, kept_config="wardgate-shop", now="t")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Accepted"]["reason"] == "InvalidSpec"
    assert "spec.limits.maxHeadersCount" in conditions["Accepted"]["message"]
    assert conditions["Ready"]["reason"] == "KeptLastGood"
    assert "policyDigest" not in status  # the last good digest stays as it was


def test_condition_transition_time_only_moves_on_change():
    first = condition("Ready", True, "A", "m", generation=1, now="t1")
    same = condition("Ready", True, "B", "m2", generation=2, now="t2", previous=[first])
    flipped = condition("Ready", False, "C", "m3", generation=3, now="t3", previous=[same])
    assert same["lastTransitionTime"] == "t1"
    assert flipped["lastTransitionTime"] == "t3"
    merged = merge_conditions(
        [first], [condition("Accepted", True, "V", "", generation=1, now="t")]
    )
    assert [c["type"] for c in merged] == ["Accepted", "Ready"]


def test_selector_requirement_has_the_cel_rule_the_model_enforces():
    spec = crd_schema("securitybaselines")["properties"]["spec"]
    requirement = spec["properties"]["namespaceSelector"]["properties"]["matchExpressions"]["items"]
    rule = requirement["x-kubernetes-validations"][0]["rule"]
    assert "has(self.values)" in rule
    mgw_selector = crd_schema("microgateways")["properties"]["spec"]["properties"]["podSelector"]
    assert mgw_selector["properties"]["matchExpressions"]["items"]["x-kubernetes-validations"]


def test_file_references_are_refused_with_the_field_path():
    spec = example("Microgateway")["spec"]
    spec["jwt"] = {
        "providers": {
            "corp": {"issuer": "https://i/", "localJwks": {"filename": "/keys/jwks.json"}}
        },
        "rules": [{"match": {"prefix": "/"}, "requires": {"providerName": "corp"}}],
    }
    evaluation = _evaluation(spec)
    assert not evaluation.accepted and evaluation.reason == "InvalidSpec"
    assert evaluation.problems[0].startswith("spec.jwt.providers.corp.localJwks.filename:")
    assert "inline" in evaluation.problems[0]


def test_policy_too_large_for_a_configmap_is_refused():
    spec = example("Microgateway")["spec"]
    spec["headers"] = {
        "response": {"add": [{"name": f"x-h{i}", "value": "v" * 8000} for i in range(130)]}
    }
    evaluation = _evaluation(spec)
    assert not evaluation.accepted and evaluation.reason == "TooLarge"
    assert "1 MiB" in evaluation.problems[0]
