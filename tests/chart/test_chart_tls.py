"""The injector's serving certificate: Helm-generated (valid for the Service name, signed by
the CA the webhooks trust, kept across upgrades via ``lookup``) or from cert-manager (a CA
chain whose CA cainjector puts into both webhooks).

``lookup`` is exercised for real: the Helm engine renders against kmock serving the
Kubernetes API, holding the Secret a previous install created."""

from __future__ import annotations

import asyncio
import base64
import datetime
from typing import Any

import helm_python as helm
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.chart.render import CHART, NAMESPACE, RELEASE, Rendered, parse, render

SERVICE = f"{RELEASE}-wardgate-injector"
SECRET = f"{RELEASE}-wardgate-injector-tls"


def _secret_data(r: Rendered) -> dict[str, bytes]:
    secret = r.one("Secret", "-injector-tls")
    assert secret["type"] == "kubernetes.io/tls"
    return {k: base64.b64decode(v) for k, v in secret["data"].items()}


def _ca_bundles(r: Rendered) -> set[str]:
    return {
        hook["clientConfig"].get("caBundle", "")
        for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
        for config in r.of_kind(kind)
        for hook in config["webhooks"]
    }


def test_helm_generated_certificate_is_valid_for_the_service() -> None:
    r = render()
    data = _secret_data(r)
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    key = load_pem_private_key(data["tls.key"], password=None)

    # The webhooks trust exactly this CA.
    assert _ca_bundles(r) == {base64.b64encode(data["ca.crt"]).decode()}
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    # The serving certificate is signed by that CA...
    assert cert.issuer == ca.subject
    ca_key = ca.public_key()
    assert isinstance(ca_key, rsa.RSAPublicKey)
    assert cert.signature_hash_algorithm is not None
    ca_key.verify(
        cert.signature,
        cert.tbs_certificate_bytes,
        padding.PKCS1v15(),
        cert.signature_hash_algorithm,
    )
    # ...matches the private key next to it...
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    # ...and names the Service as the API server dials it (service.namespace.svc).
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{SERVICE}.{NAMESPACE}.svc" in sans.get_values_for_type(x509.DNSName)
    assert (
        ExtendedKeyUsageOID.SERVER_AUTH
        in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    assert cert.not_valid_after_utc - now > datetime.timedelta(days=3600)


def test_validity_is_configurable() -> None:
    data = _secret_data(render({"webhooks": {"tls": {"helm": {"validityDays": 30}}}}))
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=29) < lifetime <= datetime.timedelta(days=31)


def test_offline_renders_generate_a_new_pair_each_time() -> None:
    # What `helm template` (and Argo CD) do: no cluster to look up. Documented: use
    # cert-manager with GitOps renderers.
    assert _secret_data(render())["ca.crt"] != _secret_data(render())["ca.crt"]


def _secret_object(data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE},
        "type": "kubernetes.io/tls",
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


async def _render_against(kmock: Any, values: dict[str, Any] | None = None) -> Rendered:
    url = str(kmock.url)

    def go() -> dict[str, str]:
        with (
            helm.Config(kube_apiserver=url, namespace=NAMESPACE) as cfg,
            helm.Chart.load(CHART) as chart,
        ):
            return cfg.render(
                chart, values or {}, name=RELEASE, namespace=NAMESPACE, is_upgrade=True
            )

    # The Helm engine blocks in C while kmock answers on this event loop: render in a thread.
    return parse(await asyncio.to_thread(go))


async def test_upgrade_keeps_the_certificate(kmock: Any) -> None:
    kmock.resources.load_bundled()
    installed = _secret_data(render())
    kmock.objects["v1/secrets", NAMESPACE, SECRET] = _secret_object(installed)

    upgraded = await _render_against(kmock)

    assert _secret_data(upgraded) == installed
    assert _ca_bundles(upgraded) == {base64.b64encode(installed["ca.crt"]).decode()}
    # The engine really asked the API server for the Secret.
    fetched = [
        r
        for r in kmock["get"]
        if str(r.url.path).endswith(f"/namespaces/{NAMESPACE}/secrets/{SECRET}")
    ]
    assert fetched


async def test_incomplete_secret_is_replaced_not_half_reused(kmock: Any) -> None:
    kmock.resources.load_bundled()
    installed = _secret_data(render())
    del installed["ca.crt"]  # e.g. someone replaced it by hand with a plain TLS Secret
    kmock.objects["v1/secrets", NAMESPACE, SECRET] = _secret_object(installed)

    upgraded = await _render_against(kmock)

    data = _secret_data(upgraded)
    assert data["tls.crt"] != installed["tls.crt"]
    ca = x509.load_pem_x509_certificate(data["ca.crt"])
    assert x509.load_pem_x509_certificate(data["tls.crt"]).issuer == ca.subject
    assert _ca_bundles(upgraded) == {base64.b64encode(data["ca.crt"]).decode()}


async def test_upgrade_on_an_empty_cluster_generates(kmock: Any) -> None:
    kmock.resources.load_bundled()
    upgraded = await _render_against(kmock)
    data = _secret_data(upgraded)
    assert _ca_bundles(upgraded) == {base64.b64encode(data["ca.crt"]).decode()}


# --- cert-manager -------------------------------------------------------------------------


def _by_name(r: Rendered, kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in r.of_kind(kind)}


def test_cert_manager_chain() -> None:
    r = render({"webhooks": {"tls": {"mode": "certManager"}}})
    assert r.of_kind("Secret") == []  # cert-manager writes it
    certs = _by_name(r, "Certificate")
    issuers = _by_name(r, "Issuer")
    serving = certs[SERVICE]

    # The Secret cert-manager writes is the one the injector mounts.
    pod = r.one("Deployment", "-injector")["spec"]["template"]["spec"]
    tls_volume = next(v for v in pod["volumes"] if v["name"] == "tls")
    assert serving["spec"]["secretName"] == tls_volume["secret"]["secretName"]
    assert f"{SERVICE}.{NAMESPACE}.svc" in serving["spec"]["dnsNames"]
    assert serving["spec"]["privateKey"]["rotationPolicy"] == "Always"

    # serving <- CA Issuer <- CA Certificate (isCA) <- selfSigned Issuer: renewing the serving
    # certificate keeps the CA the webhooks trust.
    ca_issuer = issuers[serving["spec"]["issuerRef"]["name"]]
    ca_cert = next(
        c
        for c in certs.values()
        if c["spec"]["secretName"] == ca_issuer["spec"]["ca"]["secretName"]
    )
    assert ca_cert["spec"]["isCA"] is True
    assert "selfSigned" in issuers[ca_cert["spec"]["issuerRef"]["name"]]["spec"]

    # cainjector fills both webhooks' caBundle from the serving Certificate.
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        (config,) = r.of_kind(kind)
        assert (
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            == f"{NAMESPACE}/{SERVICE}"
        )
        assert all("caBundle" not in h["clientConfig"] for h in config["webhooks"])


def test_cert_manager_with_an_existing_issuer() -> None:
    issuer = {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    r = render({"webhooks": {"tls": {"mode": "certManager", "certManager": {"issuerRef": issuer}}}})
    assert r.of_kind("Issuer") == []
    (cert,) = r.of_kind("Certificate")
    assert cert["spec"]["issuerRef"] == issuer


@pytest.mark.parametrize("field", ["duration", "renewBefore"])
def test_cert_manager_durations_are_passed_through(field: str) -> None:
    r = render({"webhooks": {"tls": {"mode": "certManager", "certManager": {field: "720h"}}}})
    serving = _by_name(r, "Certificate")[SERVICE]
    assert serving["spec"][field] == "720h"


async def test_repeated_upgrades_render_identical_manifests(kmock: Any) -> None:
    # No churn: with the Secret in the cluster, every upgrade renders byte-identical objects
    # (no new certificate, no changed checksum, nothing for the rollout to restart).
    kmock.resources.load_bundled()
    kmock.objects["v1/secrets", NAMESPACE, SECRET] = _secret_object(_secret_data(render()))
    first = await _render_against(kmock)
    second = await _render_against(kmock)
    assert first.objects == second.objects
