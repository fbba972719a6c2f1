"""A Microgateway's ``spec.tls`` (a cert-manager Secret, a client CA) reaching the sidecar, and
a SecurityBaseline making mutual TLS mandatory: the status says why a Microgateway is not
compliant, the validating webhook refuses it, the injector refuses pods without a client CA,
and the operator flags pods whose sidecar does not serve ``spec.tls``."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import jsonpatch
import pytest
import yaml

from tests.operator.kmock_support import (
    MGW,
    MICROGATEWAY,
    VersionedEmulator,
    conditions,
    declare_resources,
    eventually,
    obj,
    running_operator,
)
from tests.operator.podcheck import workload_problems
from tests.operator.test_injection import TEMPLATE, injected, pod, sidecar_of
from tests.operator.test_injector_server import injector, mgw_review, pod_review  # noqa: F401
from tests.operator.test_operator_kmock import baseline_doc, cm, create_namespace, sidecar_pod
from wardgate.config import load_policy_text
from wardgate.config.baseline import SecurityBaselineSpec
from wardgate_operator.evaluation import evaluate, status_for
from wardgate_operator.injection import InjectionError, inject
from wardgate_operator.kube import BASELINES_PATH, microgateways_path, pods_path
from wardgate_operator.models import SpecError, parse_microgateway_spec
from wardgate_operator.rendering import pod_annotations

BASE = {"podSelector": {"matchLabels": {"app": "shop"}}}
RESTRICTED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
ITEMS = [{"key": "ca.crt", "path": "ca.crt"}]
MTLS = SecurityBaselineSpec.model_validate({"peer": {"requireClientCertificate": True}})


def _args(sidecar: dict[str, Any]) -> dict[str, str]:
    args = sidecar["args"]
    return {a: args[i + 1] for i, a in enumerate(args) if a.startswith("--tls")}


@pytest.mark.parametrize(
    ("client_ca", "annotation", "ca_file", "ca_volume"),
    [
        (None, None, None, None),
        ({"secretName": "shop-tls"}, "secret", "/etc/wardgate/tls/ca.crt", None),
        (
            {"secretName": "mesh-ca"},
            "secret/mesh-ca",
            "/etc/wardgate/client-ca/ca.crt",
            {"name": "wardgate-client-ca", "secret": {"secretName": "mesh-ca", "items": ITEMS}},
        ),
        (
            {"configMapName": "mesh-roots"},
            "configmap/mesh-roots",
            "/etc/wardgate/client-ca/ca.crt",
            {"name": "wardgate-client-ca", "configMap": {"name": "mesh-roots", "items": ITEMS}},
        ),
        (
            {"configMapName": "mesh-roots", "key": "trust-bundle.pem"},
            "configmap/mesh-roots:trust-bundle.pem",
            "/etc/wardgate/client-ca/ca.crt",
            {
                "name": "wardgate-client-ca",
                "configMap": {
                    "name": "mesh-roots",
                    "items": [{"key": "trust-bundle.pem", "path": "ca.crt"}],
                },
            },
        ),
        (
            {"secretName": "shop-tls", "key": "root.pem"},
            "secret:root.pem",
            "/etc/wardgate/client-ca/ca.crt",
            {
                "name": "wardgate-client-ca",
                "secret": {
                    "secretName": "shop-tls",
                    "items": [{"key": "root.pem", "path": "ca.crt"}],
                },
            },
        ),
    ],
    ids=[
        "tls-only",
        "ca-in-same-secret",
        "ca-in-other-secret",
        "ca-in-configmap",
        "configmap-key",
        "same-secret-other-key",
    ],
)
def test_spec_tls_renders_annotations_the_injector_turns_into_a_valid_pod(
    client_ca, annotation, ca_file, ca_volume
) -> None:
    tls: dict[str, Any] = {"secretName": "shop-tls"}
    if client_ca is not None:
        tls["clientCa"] = client_ca
    spec = parse_microgateway_spec({**BASE, "tls": tls})
    annotations = pod_annotations(spec, "shop")
    assert annotations["wardgate.dev/tls-secret"] == "shop-tls"
    assert annotations.get("wardgate.dev/tls-client-ca") == annotation
    body = pod(annotations)
    body["spec"]["containers"][0]["securityContext"] = RESTRICTED
    result = injected(body)
    # native sidecars' named ports resolve for Services from Kubernetes 1.32
    assert workload_problems(result, service_port_name="http", kube_versions=("1.32", "1.33")) == []
    sidecar = sidecar_of(result)
    args = _args(sidecar)
    assert args["--tls-cert"] == "/etc/wardgate/tls/tls.crt"
    assert args["--tls-key"] == "/etc/wardgate/tls/tls.key"
    assert args.get("--tls-client-ca") == ca_file
    volumes = {v["name"]: v for v in result["spec"]["volumes"]}
    assert volumes["wardgate-tls"]["secret"] == {"secretName": "shop-tls"}
    assert volumes.get("wardgate-client-ca") == ca_volume
    # probes stay on the plain status port: readiness works without a client certificate
    assert sidecar["readinessProbe"]["httpGet"]["scheme"] == "HTTP"
    assert sidecar["readinessProbe"]["httpGet"]["port"] == "wardgate-status"
    # the policy document does not carry the cluster-only tls field
    assert "tls" not in spec.policy().model_dump(by_alias=True)


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"secretName": "a", "clientCa": {}}, "exactly one of secretName and configMapName"),
        (
            {"secretName": "a", "clientCa": {"secretName": "b", "configMapName": "c"}},
            "exactly one of secretName and configMapName",
        ),
        ({"secretName": "Not_A_Name"}, "spec.tls.secretName"),
        (
            {"secretName": "a", "clientCa": {"configMapName": "c", "key": "../etc/passwd"}},
            "spec.tls.clientCa.key",
        ),
        ({"clientCa": {"secretName": "b"}}, "spec.tls.secretName: Field required"),
    ],
)
def test_unusable_spec_tls_is_refused_with_the_field_path(tls, message) -> None:
    with pytest.raises(SpecError) as caught:
        parse_microgateway_spec({**BASE, "tls": tls})
    assert message in str(caught.value)


def test_mandatory_mutual_tls_without_a_client_ca_is_reported_and_fails_closed() -> None:
    evaluation = evaluate(
        name="shop", namespace="shop", uid="u", spec=BASE, baselines=[("mtls", MTLS)]
    )
    # rendered with the floor applied: every request without a verified client certificate
    # is refused by the sidecar until the client CA is configured
    assert evaluation.accepted and evaluation.effective is not None
    assert evaluation.effective.peer is not None
    assert evaluation.effective.peer.require_client_certificate is True
    status = status_for(evaluation, generation=1, previous={}, kept_config=None, now="t")
    compliant = {c["type"]: c for c in status["conditions"]}["BaselineCompliant"]
    assert compliant["status"] == "False"
    assert compliant["reason"] == "MutualTlsNotConfigured"
    assert "tls.clientCa: mutual TLS is mandatory in this namespace" in compliant["message"]
    assert "(baseline mtls)" in compliant["message"]

    tls_only = {**BASE, "tls": {"secretName": "shop-tls"}}
    evaluation = evaluate(
        name="shop", namespace="shop", uid="u", spec=tls_only, baselines=[("mtls", MTLS)]
    )
    assert any(f.path == "tls.clientCa" for f in evaluation.findings)

    mutual = {**BASE, "tls": {"secretName": "shop-tls", "clientCa": {"secretName": "shop-tls"}}}
    evaluation = evaluate(
        name="shop", namespace="shop", uid="u", spec=mutual, baselines=[("mtls", MTLS)]
    )
    assert not [f for f in evaluation.findings if f.kind != "clamp"]


def test_injector_refuses_a_pod_without_client_ca_where_mutual_tls_is_mandatory() -> None:
    with pytest.raises(InjectionError, match=r"mutual TLS is mandatory here \(SecurityBaseline"):
        inject(pod({"wardgate.dev/tls-secret": "shop-tls"}), TEMPLATE, mutual_tls_required_by="m")
    with pytest.raises(InjectionError, match=r"wardgate\.dev/tls-client-ca"):
        inject(pod(), TEMPLATE, mutual_tls_required_by="m")
    body = pod({"wardgate.dev/tls-secret": "shop-tls", "wardgate.dev/tls-client-ca": "secret"})
    assert inject(body, TEMPLATE, mutual_tls_required_by="m")


@pytest.fixture
def mtls_injector(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the shared injector fixture's ``prod`` baseline require mutual TLS."""
    import tests.operator.test_injector_server as server_tests

    spec = server_tests.BASELINE.spec.model_copy(update={"peer": MTLS.peer}, deep=True)
    monkeypatch.setattr(
        server_tests, "BASELINE", server_tests.ClusterBaseline(server_tests.BASELINE.name, spec)
    )


@pytest.mark.usefixtures("mtls_injector")
async def test_webhooks_enforce_the_mutual_tls_floor(injector) -> None:  # noqa: F811
    refused = (await injector.post("/inject", pod_review()))[1]["response"]
    assert refused["allowed"] is False
    assert refused["status"]["code"] == 400
    assert "mutual TLS is mandatory here (SecurityBaseline prod)" in refused["status"]["message"]

    review = pod_review(
        **{"wardgate.dev/tls-secret": "shop-tls", "wardgate.dev/tls-client-ca": "secret"}
    )
    admitted = (await injector.post("/inject", review))[1]["response"]
    assert admitted["allowed"] is True
    patched = jsonpatch.apply_patch(
        review["request"]["object"], json.loads(base64.b64decode(admitted["patch"]))
    )
    assert "--tls-client-ca" in sidecar_of(patched)["args"]

    answer = (await injector.post("/validate", mgw_review({})))[1]["response"]
    assert answer["allowed"] is False
    assert "spec.tls.clientCa: mutual TLS is mandatory" in answer["status"]["message"]
    tls = {"tls": {"secretName": "shop-tls", "clientCa": {"configMapName": "roots"}}}
    assert (await injector.post("/validate", mgw_review(tls)))[1]["response"]["allowed"] is True


@pytest.mark.kmock(cls=VersionedEmulator)
@pytest.mark.timeout(120)
async def test_operator_reports_the_mutual_tls_floor_and_pods_not_serving_spec_tls(kmock) -> None:
    declare_resources(kmock)
    await create_namespace(kmock, "shop", {"tier": "prod"})
    await kmock.post(
        BASELINES_PATH,
        json=baseline_doc(
            "mtls",
            {
                "namespaceSelector": {"matchLabels": {"tier": "prod"}},
                "peer": {"requireClientCertificate": True},
            },
        ),
    )
    async with running_operator(kmock, interval=0.2) as api:
        await api.create(microgateways_path("shop"), copy.deepcopy(MICROGATEWAY))

        def compliance(reason: str) -> dict[str, Any] | None:
            body = obj(kmock, MGW, "shop", "shop")
            found = conditions(body).get("BaselineCompliant", {})
            return body if found.get("reason") == reason else None

        def compliant() -> dict[str, Any] | None:
            found = conditions(obj(kmock, MGW, "shop", "shop")).get("BaselineCompliant", {})
            return found if found.get("status") == "True" else None

        body = await eventually(lambda: compliance("MutualTlsNotConfigured"), message="floor")
        assert conditions(body)["BaselineCompliant"]["status"] == "False"
        assert (
            "set tls.secretName and tls.clientCa"
            in conditions(body)["BaselineCompliant"]["message"]
        )
        policy = load_policy_text(cm(kmock)["data"]["policy.yaml"])
        assert policy.peer is not None and policy.peer.require_client_certificate

        await api.merge_patch(
            microgateways_path("shop", "shop"),
            {"spec": {"tls": {"secretName": "shop-tls", "clientCa": {"secretName": "shop-tls"}}}},
        )
        # compliant now; the forced peer.requireClientCertificate is a raised default
        body = await eventually(lambda: compliance("DefaultsRaised"), message="compliant")
        assert conditions(body)["BaselineCompliant"]["status"] == "True"

        # a pod injected before spec.tls (no TLS annotations) is flagged, by name
        await api.create(pods_path("shop"), sidecar_pod("shop-old", "127.0.0.1:9901"))

        def degraded() -> dict[str, Any] | None:
            found = conditions(obj(kmock, MGW, "shop", "shop")).get("Degraded", {})
            return found if found.get("reason") == "TlsNotServed" else None

        found = await eventually(degraded, message="Degraded TlsNotServed")
        assert "shop-old" in found["message"]

        # re-created with the annotations `render` prints: healthy again
        await api.delete(pods_path("shop") + "/shop-old")
        fresh = sidecar_pod("shop-new", "127.0.0.1:9901")
        fresh["metadata"]["annotations"] = {
            "wardgate.dev/tls-secret": "shop-tls",
            "wardgate.dev/tls-client-ca": "secret",
        }
        await api.create(pods_path("shop"), fresh)

        def healthy() -> dict[str, Any] | None:
            found = conditions(obj(kmock, MGW, "shop", "shop")).get("Degraded", {})
            return found if found.get("status") == "False" else None

        assert (await eventually(healthy, message="Degraded False"))["reason"] == "Healthy"


def test_the_mutual_tls_example_renders_the_tls_annotations(capsys) -> None:
    from pathlib import Path

    from wardgate_operator.cli import main

    example = Path(__file__).resolve().parents[2] / "examples/k8s/mutual-tls.yaml"
    assert main(["render", str(example)]) == 0
    out = capsys.readouterr().out
    assert "wardgate.dev/tls-secret: 'orders-tls'" in out
    assert "wardgate.dev/tls-client-ca: 'secret'" in out
    # and the pod those annotations make is valid and serves mutual TLS
    spec = parse_microgateway_spec(
        next(d for d in yaml.safe_load_all(example.read_text()) if d["kind"] == "Microgateway")[
            "spec"
        ]
    )
    body = pod(pod_annotations(spec, "orders"))
    body["spec"]["containers"][0]["securityContext"] = RESTRICTED
    result = injected(body)
    assert workload_problems(result, service_port_name="http", kube_versions=("1.32", "1.33")) == []
    assert _args(sidecar_of(result))["--tls-client-ca"] == "/etc/wardgate/tls/ca.crt"
