"""The admission server over real TLS (a throwaway CA made with `cryptography`), answering
AdmissionReview requests as the API server sends them; certificate rotation without restart."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import kubernetes_validate
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wardgate.config.baseline import SecurityBaselineSpec
from wardgate_operator.admission import InjectorServer, start_injector, static_baselines
from wardgate_operator.baseline import ClusterBaseline
from wardgate_operator.models import SidecarConfig

TEMPLATE = SidecarConfig.model_validate({"image": "ghcr.io/wardgate/wardgate:0.1.0"})


@dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(self, cert_path: Path, key_path: Path) -> int:
        """Write a fresh server certificate for 127.0.0.1; return its serial."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        serial = x509.random_serial_number()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wardgate-injector")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return serial


def make_ca() -> Ca:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Ca(key, cert)


@dataclass
class Injector:
    server: InjectorServer
    ca: Ca
    cert: Path
    key: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca.pem())

    async def post(self, path: str, body: Any) -> tuple[int, dict[str, Any]]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with aiohttp.ClientSession() as session:
            async with session.post(
                self.url + path,
                data=data,
                headers={"Content-Type": "application/json"},
                ssl=self.client_context(),
            ) as response:
                return response.status, await response.json()


BASELINE = ClusterBaseline(
    "prod",
    SecurityBaselineSpec.model_validate(
        {
            "namespaceSelector": {"matchLabels": {"tier": "prod"}},
            "limits": {"maxUrlBytes": 4096, "maxRequestBodyBytes": 1000},
            "sidecarResources": {"memory": "100Mi"},
        }
    ),
)


@pytest.fixture
async def injector(tmp_path: Path) -> AsyncIterator[Injector]:
    ca = make_ca()
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    ca.issue(cert, key)
    server = await start_injector(
        host="127.0.0.1",
        port=0,
        cert=cert,
        key=key,
        template=TEMPLATE,
        baselines=static_baselines([BASELINE], {"shop": {"tier": "prod"}}),
        reload_interval=0.05,
    )
    yield Injector(server, ca, cert, key)
    await server.close()


def pod_review(
    operation: str = "CREATE", dry_run: bool = False, **annotations: str
) -> dict[str, Any]:
    ann = {
        "wardgate.dev/microgateway": "shop",
        "wardgate.dev/service-port": "8080",
        "wardgate.dev/app-port": "8081",
        **annotations,
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        # as a ReplicaSet creates it: generateName only, no namespace in the object
        "metadata": {"generateName": "shop-7d9c-", "labels": {"app": "shop"}, "annotations": ann},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "shop:1",
                    "ports": [{"name": "http", "containerPort": 8080}],
                }
            ]
        },
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "dryRun": dry_run,
        },
    }


async def test_pod_create_gets_a_patch_that_applies_and_validates(injector):
    review = pod_review()
    status, answer = await injector.post("/inject", review)
    assert status == 200
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    pod = jsonpatch.apply_patch(review["request"]["object"], patch)
    assert pod["spec"]["initContainers"][0]["name"] == "wardgate"
    kubernetes_validate.validate(pod, "1.31", strict=True)
    assert "wardgate sidecar injected" in response["warnings"]


async def test_dry_run_gets_the_same_answer_and_reinvocation_is_empty(injector):
    plain = (await injector.post("/inject", pod_review()))[1]["response"]
    dry = (await injector.post("/inject", pod_review(dry_run=True)))[1]["response"]
    assert dry["patch"] == plain["patch"]  # no side effects, so dryRun changes nothing
    review = pod_review()
    patched = jsonpatch.apply_patch(
        review["request"]["object"], json.loads(base64.b64decode(plain["patch"]))
    )
    review["request"]["object"] = patched
    again = (await injector.post("/inject", review))[1]["response"]
    assert again["allowed"] is True and "patch" not in again


async def test_update_and_uninterested_pods_pass_unchanged(injector):
    update = (await injector.post("/inject", pod_review("UPDATE")))[1]["response"]
    assert update == {"uid": update["uid"], "allowed": True}
    review = pod_review()
    del review["request"]["object"]["metadata"]["annotations"]["wardgate.dev/microgateway"]
    plain = (await injector.post("/inject", review))[1]["response"]
    assert plain["allowed"] is True and "patch" not in plain


async def test_unusable_injection_request_is_refused_with_a_reason(injector):
    status, answer = await injector.post("/inject", pod_review(**{"wardgate.dev/app-port": "8080"}))
    assert status == 200
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 400
    assert "must differ" in answer["response"]["status"]["message"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (
            {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}},
            "expected apiVersion",
        ),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "request is missing"),
        (
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": 5}},
            "uid",
        ),
        (b"\xff\xfe", "not JSON"),
    ],
)
async def test_bad_admission_review_is_a_400_never_a_crash(injector, body, reason):
    status, answer = await injector.post("/inject", body)
    assert status == 400
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"]["code"] == 400
    assert reason in answer["response"]["status"]["message"]


async def test_non_pod_object_is_refused(injector):
    review = pod_review()
    review["request"]["kind"]["kind"] = "Deployment"
    answer = (await injector.post("/inject", review))[1]["response"]
    assert answer["allowed"] is False and answer["status"]["code"] == 400


async def test_healthz(injector):
    async with aiohttp.ClientSession() as session:
        async with session.get(injector.url + "/healthz", ssl=injector.client_context()) as r:
            assert r.status == 200


def mgw_review(spec: dict[str, Any], namespace: str = "shop") -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "wardgate.dev", "version": "v1alpha1", "kind": "Microgateway"},
            "namespace": namespace,
            "operation": "CREATE",
            "object": {
                "apiVersion": "wardgate.dev/v1alpha1",
                "kind": "Microgateway",
                "metadata": {"name": "shop", "namespace": namespace},
                "spec": {
                    "podSelector": {"matchLabels": {"app": "shop"}},
                    "servicePort": 8080,
                    "appPort": 8081,
                    **spec,
                },
            },
        },
    }


async def test_validate_rejects_weakening_listing_each_floor(injector):
    review = mgw_review({"limits": {"maxUrlBytes": 9000, "maxRequestBodyBytes": 5000}})
    answer = (await injector.post("/validate", review))[1]["response"]
    assert answer["allowed"] is False
    message = answer["status"]["message"]
    assert "spec.limits.maxUrlBytes: 9000 is over the maximum 4096" in message
    assert "spec.limits.maxRequestBodyBytes: 5000 is over the maximum 1000" in message
    assert "(baseline prod)" in message


async def test_validate_admits_clamped_defaults_with_warnings(injector):
    answer = (await injector.post("/validate", mgw_review({})))[1]["response"]
    assert answer["allowed"] is True
    assert any("limits.maxUrlBytes: 8192 is over the maximum 4096" in w for w in answer["warnings"])


async def test_validate_other_namespace_is_not_under_the_baseline(injector):
    review = mgw_review({"limits": {"maxUrlBytes": 9000}}, namespace="lab")
    answer = (await injector.post("/validate", review))[1]["response"]
    assert answer["allowed"] is True and "warnings" not in answer


async def test_validate_rejects_invalid_policy_with_the_field_path(injector):
    answer = (await injector.post("/validate", mgw_review({"limits": {"maxHeadersCount": 0}})))[1]
    assert answer["response"]["allowed"] is False
    assert "spec.limits.maxHeadersCount" in answer["response"]["status"]["message"]


async def _served_serial(injector: Injector) -> int:
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        injector.server.port,
        ssl=injector.client_context(),
        server_hostname="localhost",
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return x509.load_der_x509_certificate(der).serial_number


async def test_rotated_certificate_is_served_without_restart(injector):
    before = await _served_serial(injector)
    new_serial = injector.ca.issue(injector.cert, injector.key)
    assert new_serial != before
    for _ in range(200):
        if await _served_serial(injector) == new_serial:
            break
        await asyncio.sleep(0.05)
    assert await _served_serial(injector) == new_serial
    # still answering reviews on the new certificate
    assert (await injector.post("/inject", pod_review()))[1]["response"]["allowed"] is True


async def test_broken_rotation_keeps_the_old_certificate(injector):
    before = await _served_serial(injector)
    injector.cert.write_text("-----BEGIN CERTIFICATE-----\ngarbage\n")
    for _ in range(10):
        await asyncio.sleep(0.05)
    assert await _served_serial(injector) == before
    assert injector.server.reloader.reloads == 0


def test_injector_command_serves_tls_and_stops_on_sigterm(tmp_path: Path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    ca = make_ca()
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    ca.issue(cert, key)
    config = tmp_path / "sidecar.yaml"
    config.write_text(
        "image: ghcr.io/wardgate/wardgate:0.1.0\nimagePullPolicy: IfNotPresent\n"
        "resources: {requests: {cpu: 50m}, limits: {cpu: 500m, memory: 256Mi}}\n"
        "adminPort: 9901\nmode: native\n"
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).parent / "wardgate-operator"
    proc = subprocess.Popen(
        [
            str(exe),
            "injector",
            "--listen",
            f"127.0.0.1:{port}",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--sidecar-config",
            str(config),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        context = ssl.create_default_context(cadata=ca.pem())
        body = None
        for _ in range(200):
            try:
                with urllib.request.urlopen(
                    f"https://127.0.0.1:{port}/healthz", context=context
                ) as r:
                    body = r.read()
                break
            except OSError:
                time.sleep(0.05)
        assert body == b"ok\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()


def test_injector_command_rejects_a_bad_sidecar_config(tmp_path: Path):
    import subprocess
    import sys

    config = tmp_path / "sidecar.yaml"
    config.write_text("imagePullPolicy: Sometimes\n")
    exe = Path(sys.executable).parent / "wardgate-operator"
    result = subprocess.run(
        [str(exe), "injector", "--sidecar-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "image: Field required" in result.stderr and "imagePullPolicy" in result.stderr
    assert "Traceback" not in result.stderr


async def test_baseline_sidecar_ceiling_applies_in_selected_namespaces_only(injector):
    shop = (await injector.post("/inject", pod_review()))[1]["response"]
    patch = json.loads(base64.b64decode(shop["patch"]))
    container = next(op["value"][0] for op in patch if op["path"] == "/spec/initContainers")
    assert container["resources"]["limits"]["memory"] == "100Mi"
    lab = pod_review()
    lab["request"]["namespace"] = "lab"
    other = (await injector.post("/inject", lab))[1]["response"]
    patch = json.loads(base64.b64decode(other["patch"]))
    container = next(op["value"][0] for op in patch if op["path"] == "/spec/initContainers")
    assert "resources" not in container
