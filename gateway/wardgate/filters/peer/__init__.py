"""The ``peer`` filter: caller (workload) authorization by the identity of its verified TLS
client certificate, like Istio's ``AuthorizationPolicy`` ``principals``.

Contract with the rest of the chain:

* Runs after ``limits`` and before ``jwt_authn``. The first ``peer.rules`` entry whose
  ``match`` covers the request decides; no rule: 403 (``no_rule``); ``skip: true`` lets the
  request through without looking at the certificate.
* Reads only ``request.peer`` (set by the proxy adapter from the handshake, never from a
  header). Refusals are :class:`~wardgate.filters.api.LocalReply` objects with a stable
  ``reason``: ``no_client_certificate`` (403: the rule needs a principal and the
  connection has no verified client certificate), ``principal_not_allowed`` (403: none of
  the rule's principals matches; the violation message lists what the rule accepts and
  names the caller's principal), ``no_rule`` (403), ``ambiguous_path`` (400).
* On success ``request.metadata["peer"]`` is ``{"principal": ..., "uriSans": [...],
  "dnsSans": [...], "subject": ..., "sha256": ...}`` when the connection has a verified
  client certificate (shared between requests of the same caller: read it, never modify
  it). It changes no header (``x-forwarded-client-cert`` is the proxy's).
"""

from wardgate.filters.peer.filter import PeerConfig, PeerFilter, compile

__all__ = ["PeerConfig", "PeerFilter", "compile"]
