"""`helm test` for Wardgate: checks the injector from inside the cluster.

1. GET /healthz over HTTPS, verifying the serving certificate against the CA the webhooks
   trust (the TLS Secret's ca.crt) and the Service DNS name the API server uses.
2. POST an AdmissionReview for a pod that asks for a sidecar to /inject: the answer must allow
   it with a JSONPatch adding the sidecar with the image from the chart's sidecar config.
3. POST one for a pod that does not ask: allowed, no patch.

Standard library plus PyYAML (in the operator image). Exit status 0 on success; every failure
prints what was expected and what came back.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import sys
import urllib.parse
import uuid
from typing import Any

import yaml

URL = os.environ["WARDGATE_INJECTOR_URL"].rstrip("/")
CA_FILE = os.environ.get("WARDGATE_CA_FILE", "/tls/ca.crt")
SIDECAR_CONFIG = os.environ.get("WARDGATE_SIDECAR_CONFIG", "/etc/wardgate/sidecar.yaml")
NAMESPACE = os.environ.get("WARDGATE_TEST_NAMESPACE", "wardgate-helm-test")
TIMEOUT = float(os.environ.get("WARDGATE_TEST_TIMEOUT", "10"))
# host:port to dial instead of the URL's (the URL's host is still the name the certificate
# must carry). Unset in the cluster; the chart's own tests use it to reach a local injector.
CONNECT = os.environ.get("WARDGATE_CONNECT_ADDRESS", "")
HTTP_OK = 200


class Failure(Exception):
    pass


def context() -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=CA_FILE)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class _Connection(http.client.HTTPSConnection):
    """HTTPS to the URL's host name (SNI and certificate check), optionally dialling another
    address."""

    def connect(self) -> None:
        if not CONNECT:
            super().connect()
            return
        host, _, port = CONNECT.rpartition(":")
        raw = socket.create_connection((host, int(port)), timeout=self.timeout)
        self.sock = context().wrap_socket(raw, server_hostname=self.host)


def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    url = urllib.parse.urlsplit(URL)
    if url.scheme != "https" or not url.hostname:
        raise Failure(f"WARDGATE_INJECTOR_URL must be https://host[:port], not {URL!r}")
    conn = _Connection(url.hostname, url.port or 443, timeout=TIMEOUT, context=context())
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw and body is not None else raw)
    finally:
        conn.close()


def review(pod: dict[str, Any]) -> dict[str, Any]:
    uid = str(uuid.uuid4())
    status, answer = call(
        "POST",
        "/inject",
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "requestResource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": NAMESPACE,
                "operation": "CREATE",
                "userInfo": {"username": "system:serviceaccount:helm-test"},
                "object": pod,
                "dryRun": True,
            },
        },
    )
    if status != HTTP_OK:
        raise Failure(f"/inject answered HTTP {status}")
    response = answer.get("response") or {}
    if response.get("uid") != uid:
        raise Failure(f"/inject echoed uid {response.get('uid')!r}, expected {uid!r}")
    return dict(response)


def containers_in(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        found = [value] if "image" in value and "name" in value else []
        for child in value.values():
            found.extend(containers_in(child))
        return found
    if isinstance(value, list):
        return [c for item in value for c in containers_in(item)]
    return []


def pod(annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "helm-test-", "annotations": annotations},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example/app:1",
                    "ports": [{"name": "http", "containerPort": 8080}],
                }
            ]
        },
    }


def main() -> None:
    with open(SIDECAR_CONFIG, encoding="utf-8") as fh:
        expected_image = yaml.safe_load(fh)["image"]

    status, _ = call("GET", "/healthz")
    if status != HTTP_OK:
        raise Failure(f"/healthz answered HTTP {status}")
    print(f"ok: {URL}/healthz over verified TLS")

    # The default since 0.2: one annotation, the app's port and probes unchanged.
    wanted = review(pod({"wardgate.dev/microgateway": "helm-test"}))
    if wanted.get("allowed") is not True or wanted.get("patchType") != "JSONPatch":
        raise Failure(f"pod asking for a sidecar: expected an allowed JSONPatch, got {wanted}")
    patch = json.loads(base64.b64decode(wanted["patch"]))
    images = {c["image"] for op in patch for c in containers_in(op.get("value"))}
    if expected_image not in images:
        raise Failure(f"the patch adds no container with image {expected_image}: {sorted(images)}")
    print(f"ok: /inject adds the sidecar {expected_image}")

    plain = review(pod({}))
    if plain.get("allowed") is not True or plain.get("patch"):
        raise Failure(f"pod not asking for a sidecar: expected allowed, no patch; got {plain}")
    print("ok: /inject leaves other pods alone")


if __name__ == "__main__":
    try:
        main()
    except (Failure, OSError, ValueError, KeyError) as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        sys.exit(1)
