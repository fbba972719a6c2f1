"""``peer``: which calling workloads may use which routes, by the identity in their verified
TLS client certificate (mutual TLS, ``wardgate run --tls-client-ca``).

Modelled on Istio's ``AuthorizationPolicy`` ``principals`` and Envoy RBAC's
``authenticated.principal_name``, with the rule shape of ``jwt.rules`` (the same
``match``, first match decides, "no check" written down as ``skip: true``). Both sections
apply to a request: a rule here (the service identity) and a ``jwt`` rule (the end user)
must each be satisfied.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, model_validator

from wardgate.config.base import SpecModel
from wardgate.config.jwt import RouteMatchSpec, StringMatcherSpec, exactly_one
from wardgate.config.lattice import APP, REQUIRED


class PrincipalSpec(SpecModel):
    """One accepted caller: exactly one of ``uri``, ``dns`` and ``subject``.

    * ``uri``: a URI SAN of the client certificate (a SPIFFE ID such as
      ``spiffe://cluster.local/ns/shop/sa/billing``) must match;
    * ``dns``: a DNS SAN must match;
    * ``subject``: the subject DN (RFC 4514, most specific first: ``CN=billing,O=shop``)
      must match.
    """

    uri: StringMatcherSpec | None = None
    """Matched against every URI SAN; one match is enough."""
    dns: StringMatcherSpec | None = None
    """Matched against every DNS SAN; one match is enough."""
    subject: StringMatcherSpec | None = None
    """Matched against the subject distinguished name."""

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        exactly_one(self, ("uri", "dns", "subject"), "a principal")
        return self


class PeerRuleSpec(SpecModel):
    """A rule: the first rule whose ``match`` covers the request decides. Exactly one of
    ``principals`` and ``skip: true``."""

    match: RouteMatchSpec
    """Which requests the rule covers (as in ``jwt.rules``)."""
    principals: Annotated[tuple[PrincipalSpec, ...], Field(min_length=1, max_length=256)] | None = (
        None
    )
    """The caller's verified certificate must match one of these (else 403)."""
    skip: bool = False
    """``true``: no client certificate is looked at (a health check, a public route)."""

    @model_validator(mode="after")
    def _principals_or_skip(self) -> Self:
        if (self.principals is None) == (not self.skip):
            raise ValueError("a rule needs exactly one of `principals` or `skip: true`")
        return self


class PeerSpec(SpecModel):
    """Caller (workload) authorization by client certificate. At least one of
    ``requireClientCertificate: true`` and ``rules``."""

    require_client_certificate: Annotated[bool, REQUIRED] = False
    """Every request must come over a connection with a verified client certificate,
    whatever the rules say (Istio's ``PeerAuthentication`` ``STRICT``); otherwise 403
    ``no_client_certificate``. A ``SecurityBaseline`` can make this mandatory."""

    rules: Annotated[tuple[PeerRuleSpec, ...], APP] = ()
    """In order; the first match decides; a request no rule matches is refused (403).
    Empty: no per-route principals (only ``requireClientCertificate``)."""

    @model_validator(mode="after")
    def _says_something(self) -> Self:
        if not self.rules and not self.require_client_certificate:
            raise ValueError("peer needs `rules` or `requireClientCertificate: true`")
        return self
