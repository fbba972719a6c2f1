"""The calling workload's identity, from a verified TLS client certificate.

The proxy adapter builds one :class:`PeerIdentity` per mutual-TLS connection (after the
handshake verified the certificate against the configured CA bundle) and hands it to the
filters in :attr:`wardgate.filters.api.HttpRequest.peer`. It is plain data: filters read
it, never construct it from anything the client sent (a client's
``x-forwarded-client-cert`` header is never trusted)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """What a verified client certificate says about the caller.

    ``uri_sans`` are the URI subject alternative names (a SPIFFE ID such as
    ``spiffe://cluster.local/ns/shop/sa/billing``), ``dns_sans`` the DNS names,
    ``subject`` the subject distinguished name in RFC 4514 form (``CN=billing,O=shop``),
    ``sha256`` the lower-case hex SHA-256 of the DER certificate (Envoy's XFCC ``Hash``),
    ``local_uri`` the URI SAN of the gateway's own certificate (Envoy's XFCC ``By``;
    empty when it has none)."""

    uri_sans: tuple[str, ...]
    dns_sans: tuple[str, ...]
    subject: str
    sha256: str
    local_uri: str = ""

    @property
    def principal(self) -> str:
        """Envoy RBAC's ``principal_name``: the first URI SAN, else the first DNS SAN, else
        the subject."""
        if self.uri_sans:
            return self.uri_sans[0]
        if self.dns_sans:
            return self.dns_sans[0]
        return self.subject
