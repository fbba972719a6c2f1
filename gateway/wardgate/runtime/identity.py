"""The caller's identity from its verified client certificate, and Envoy's
``x-forwarded-client-cert`` (XFCC) header built from it.

Forwarding follows Envoy's ``forward_client_cert_details: SANITIZE_SET`` with
``set_current_client_cert_details`` ``{subject, uri, dns}`` (the hash is always there):
whatever ``x-forwarded-client-cert`` the client sent is removed on every request, and on a
mutual-TLS connection the gateway sets its own, for example::

    By=spiffe://cluster.local/ns/shop/sa/orders;Hash=3f9c...;Subject="CN=billing,O=shop";
    URI=spiffe://cluster.local/ns/shop/sa/billing;DNS=billing.shop.svc

(one line). ``By`` is the gateway's own URI SAN and is left out when its certificate has
none."""

from __future__ import annotations

import functools
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from multidict import CIMultiDict

from wardgate.filters.identity import PeerIdentity

XFCC = "x-forwarded-client-cert"

_MAX_NAMES = 32
"""SAN entries taken from one certificate (of each kind): a certificate is verified, but
the header stays bounded whatever the CA signed."""


def subject_alt_names(cert: x509.Certificate) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(URI SANs, DNS SANs)`` of ``cert``, at most :data:`_MAX_NAMES` of each."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), ()
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)[:_MAX_NAMES]
    dns = san.get_values_for_type(x509.DNSName)[:_MAX_NAMES]
    return tuple(uris), tuple(dns)


@functools.lru_cache(maxsize=4096)
def identity_from_der(der: bytes, local_uri: str = "") -> PeerIdentity:
    """The :class:`PeerIdentity` of a DER client certificate (the handshake verified it).
    Cached by certificate: a client reconnecting costs one dictionary lookup."""
    cert = x509.load_der_x509_certificate(der)
    uris, dns = subject_alt_names(cert)
    return PeerIdentity(
        uri_sans=uris,
        dns_sans=dns,
        subject=cert.subject.rfc4514_string(),
        sha256=hashlib.sha256(der).hexdigest(),
        local_uri=local_uri,
    )


def identity_from_pem(text: str) -> PeerIdentity | None:
    """The identity of the first certificate in a PEM text (Envoy's ext_authz
    ``source.certificate``, URL-decoded), ``None`` when there is none or it is not PEM."""
    try:
        cert = x509.load_pem_x509_certificate(text.encode("ascii", "replace"))
    except ValueError:
        return None
    return identity_from_der(cert.public_bytes(serialization.Encoding.DER))


def _clean(value: str) -> str:
    """Control characters (a CA may sign anything) as ``\\xNN``: never a header break."""
    if value.isprintable():
        return value
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in value)


def _quoted(value: str) -> str:
    escaped = _clean(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _value(value: str) -> str:
    """Envoy's XFCC value rule: quoted when it holds ``,``, ``;``, ``=`` or ``"``."""
    value = _clean(value)
    return _quoted(value) if any(ch in value for ch in ',;="') else value


@functools.lru_cache(maxsize=4096)
def xfcc_value(peer: PeerIdentity) -> str:
    """The ``x-forwarded-client-cert`` element for ``peer`` (computed once per identity)."""
    parts = []
    if peer.local_uri:
        parts.append(f"By={_value(peer.local_uri)}")
    parts.append(f"Hash={peer.sha256}")
    parts.append(f"Subject={_quoted(peer.subject)}")
    parts.extend(f"URI={_value(uri)}" for uri in peer.uri_sans)
    parts.extend(f"DNS={_value(name)}" for name in peer.dns_sans)
    return ";".join(parts)


def client_certificate_fields(peer: PeerIdentity | None) -> dict[str, object] | None:
    """The access log's ``tls.client`` fields (ECS) for ``peer``: names and hash, never
    the certificate itself."""
    if peer is None:
        return None
    return _log_fields(peer)


@functools.lru_cache(maxsize=4096)
def _log_fields(peer: PeerIdentity) -> dict[str, object]:
    return {
        "x509.subject.distinguished_name": peer.subject,
        "x509.alternative_names": [*peer.uri_sans, *peer.dns_sans],
        "hash.sha256": peer.sha256,
        "principal": peer.principal,
    }


def set_client_cert_header(headers: CIMultiDict[str], peer: PeerIdentity | None) -> None:
    """SANITIZE_SET: replace any ``x-forwarded-client-cert`` with the verified ``peer``'s
    (remove it when there is none)."""
    headers.popall(XFCC, None)
    if peer is not None:
        headers[XFCC] = xfcc_value(peer)
