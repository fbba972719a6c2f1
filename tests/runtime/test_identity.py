"""The caller identity from a certificate and its ``x-forwarded-client-cert`` rendering:
Envoy's format, and no certificate content can break the header."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from tests.tls_support import Ca
from wardgate.filters.identity import PeerIdentity
from wardgate.runtime.identity import (
    XFCC,
    identity_from_der,
    identity_from_pem,
    set_client_cert_header,
    xfcc_value,
)


def test_identity_from_a_certificate() -> None:
    ca = Ca()
    leaf = ca.issue(
        "billing",
        uris=("spiffe://cluster.local/ns/shop/sa/billing",),
        dns=("billing.shop.svc", "billing"),
        organization='Shop "Inc", Ltd',
    )
    peer = identity_from_der(leaf.der, "spiffe://cluster.local/ns/shop/sa/orders")
    assert peer.uri_sans == ("spiffe://cluster.local/ns/shop/sa/billing",)
    assert peer.dns_sans == ("billing.shop.svc", "billing")
    assert peer.subject == 'O=Shop \\"Inc\\"\\, Ltd,CN=billing'
    assert peer.principal == "spiffe://cluster.local/ns/shop/sa/billing"
    assert xfcc_value(peer) == (
        f"By=spiffe://cluster.local/ns/shop/sa/orders;Hash={peer.sha256};"
        'Subject="O=Shop \\\\\\"Inc\\\\\\"\\\\, Ltd,CN=billing";'
        "URI=spiffe://cluster.local/ns/shop/sa/billing;DNS=billing.shop.svc;DNS=billing"
    )
    assert identity_from_pem(leaf.cert_pem.decode()) == PeerIdentity(
        peer.uri_sans, peer.dns_sans, peer.subject, peer.sha256
    )
    assert identity_from_pem("garbage") is None


def test_principal_falls_back_to_dns_then_subject() -> None:
    assert PeerIdentity((), ("a.svc",), "CN=a", "00").principal == "a.svc"
    assert PeerIdentity((), (), "CN=a", "00").principal == "CN=a"


def test_sanitize_set() -> None:
    headers: CIMultiDict[str] = CIMultiDict([(XFCC, "By=forged"), (XFCC, "Hash=forged")])
    set_client_cert_header(headers, None)
    assert XFCC not in headers
    headers.add(XFCC, "By=forged")
    peer = PeerIdentity(("spiffe://a/b",), (), "CN=a", "ab")
    set_client_cert_header(headers, peer)
    assert headers.getall(XFCC) == ['Hash=ab;Subject="CN=a";URI=spiffe://a/b']


@given(st.text(max_size=64), st.text(max_size=64), st.text(max_size=64))
def test_no_value_breaks_the_header(subject: str, uri: str, dns: str) -> None:
    value = xfcc_value(PeerIdentity((uri,), (dns,), subject, "ab"))
    assert value.isprintable()  # no CR, LF, NUL or other control character
    # The quoted Subject ends where it should: every quote inside it is escaped.
    inner = value.split("Subject=", 1)[1]
    assert inner.startswith('"')
    end = 1
    while inner[end] != '"':
        end += 2 if inner[end] == "\\" else 1
    assert inner[end + 1 : end + 2] in ("", ";")
