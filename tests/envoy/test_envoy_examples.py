"""Every Envoy file in examples/envoy is a valid Envoy 1.40 bootstrap (``envoy --mode
validate``), and the Istio manifests are well-formed and point at Wardgate."""

from __future__ import annotations

import subprocess

import kubernetes_validate
import pytest
import yaml

from tests.envoy.harness import ENVOY, EXAMPLES
from wardgate.config import load_policy_text

ENVOY_FILES = sorted(p for p in EXAMPLES.glob("*.yaml") if "static_resources" in p.read_text())


def test_every_envoy_example_is_found():
    names = {p.name for p in ENVOY_FILES}
    assert {"ext-authz-grpc.yaml", "ext-authz-http.yaml"} <= names


@pytest.mark.parametrize("path", ENVOY_FILES, ids=lambda p: p.name)
def test_envoy_accepts_the_example(path):
    result = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout + result.stderr


ISTIO = EXAMPLES / "istio"


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((ISTIO / name).read_text()) if d]


def test_istio_kubernetes_objects_validate_against_the_kubernetes_schema():
    """Core kinds only: kubernetes-validate has no Istio CRD schemas, and only a real Istio
    cluster proves the mesh wiring end to end."""
    for name in ("mesh-config.yaml", "wardgate-ext-authz.yaml"):
        for doc in _docs(name):
            kubernetes_validate.validate(doc, "1.30", strict=True)


def test_istio_authorization_policy_uses_a_declared_provider_on_the_service_ports():
    (policy,) = _docs("authorization-policy.yaml")
    assert policy["apiVersion"] == "security.istio.io/v1"
    assert policy["kind"] == "AuthorizationPolicy"
    assert policy["spec"]["action"] == "CUSTOM"
    (mesh_cm,) = _docs("mesh-config.yaml")
    mesh = yaml.safe_load(mesh_cm["data"]["mesh"])
    providers = {p["name"]: p for p in mesh["extensionProviders"]}
    assert policy["spec"]["provider"]["name"] in providers
    objects = {d["kind"]: d for d in _docs("wardgate-ext-authz.yaml")}
    service = objects["Service"]
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    service_ports = {p["port"] for p in service["spec"]["ports"]}
    for provider in providers.values():
        (config,) = (v for k, v in provider.items() if k.startswith("envoyExtAuthz"))
        assert config["service"] == host
        assert config["port"] in service_ports
        assert config["failOpen"] is False
    args = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "ext-authz"
    assert {"0.0.0.0:9191", "0.0.0.0:9192"} <= set(args)
    # The policy the Deployment mounts is a valid Wardgate policy.
    load_policy_text(objects["ConfigMap"]["data"]["policy.yaml"])
