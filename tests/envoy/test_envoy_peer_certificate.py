"""The gRPC ext_authz adapter takes the caller identity from the certificate Envoy verified
(``source.certificate``, sent with ``include_peer_certificate: true``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from tests.tls_support import Ca
from wardgate.config import load_policy_text
from wardgate.envoy.decision import CheckInput, build_request, decide
from wardgate.runtime import compile_policy

POLICY = """
peer:
  rules:
    - match: {prefix: /}
      principals:
        - uri: {prefix: "spiffe://cluster.local/ns/shop/"}
"""


def _check(pem: str) -> CheckInput:
    return CheckInput(
        method="GET",
        target="/orders",
        headers=((":authority", "orders"), ("x-forwarded-client-cert", "By=forged")),
        peer_certificate=quote(pem),
    )


async def test_envoy_peer_certificate_is_the_caller_identity(tmp_path: Path) -> None:
    ca = Ca()
    shop = ca.issue("billing", uris=("spiffe://cluster.local/ns/shop/sa/billing",))
    other = ca.issue("x", uris=("spiffe://cluster.local/ns/other/sa/x",))
    request = build_request(_check(shop.cert_pem.decode()))
    assert request.peer is not None
    assert request.peer.principal == "spiffe://cluster.local/ns/shop/sa/billing"
    policy = compile_policy(load_policy_text(POLICY))
    assert (await decide(policy, _check(shop.cert_pem.decode()))).allowed
    refused = await decide(policy, _check(other.cert_pem.decode()))
    assert (refused.allowed, refused.reason) == (False, "principal_not_allowed")
    missing = await decide(policy, _check(""))
    assert (missing.allowed, missing.reason) == (False, "no_client_certificate")
    garbage = build_request(_check("not a certificate"))
    assert garbage.peer is None
