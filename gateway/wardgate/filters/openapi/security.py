"""The spec's ``security`` requirements as the authorization policy per operation.

A requirement list is an OR of AND-sets (``[{oauth: [pets:read]}, {apiKey: []}]``). Each
scheme is checked against what the gateway can verify:

* ``http``/``bearer``, ``oauth2``, ``openIdConnect``: verified JWT claims written by the
  ``jwt_authn`` filter (``request.metadata["jwt_authn"]``: provider name -> claims) with
  every required scope in ``scope`` (space-separated) or ``scp`` (list or string). The
  token itself was verified there; here only its claims are read.
* ``apiKey``, ``http``/``basic`` and other ``http`` schemes: the credential must be present
  where the scheme says; the service verifies it (listed by ``limitations()``).
* ``mutualTLS``: cannot be verified here; the requirement is never met (fail closed).

No claims at all: 401. Claims without the scopes: 403 with RFC 6750's
``insufficient_scope``. The token's own scopes are never echoed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wardgate.filters.api import Violation

JWT_METADATA = "jwt_authn"


@dataclass(frozen=True, slots=True)
class Scheme:
    """One security scheme, compiled."""

    name: str
    kind: str
    """``jwt``, ``apikey``, ``http`` (credential presence) or ``unsupported``."""
    location: str = ""
    """For ``apikey``: ``header``, ``query`` or ``cookie``."""
    key: str = ""
    """For ``apikey``: the parameter name; for ``http``: the auth scheme (lower case)."""


Requirement = tuple[tuple[Scheme, frozenset[str]], ...]


@dataclass(frozen=True, slots=True)
class SecurityPolicy:
    """An operation's requirements: satisfied when any one requirement is."""

    requirements: tuple[Requirement, ...]

    @property
    def open(self) -> bool:
        """No requirement, or an empty one (``{}``: anonymous access allowed)."""
        return not self.requirements or any(not r for r in self.requirements)

    @property
    def uses_jwt(self) -> bool:
        return any(s.kind == "jwt" for r in self.requirements for s, _ in r)


def compile_scheme(name: str, node: Mapping[str, Any]) -> Scheme:
    kind = node.get("type")
    if kind in ("oauth2", "openIdConnect"):
        return Scheme(name, "jwt")
    if kind == "http":
        auth = str(node.get("scheme", "")).lower()
        if auth == "bearer":
            return Scheme(name, "jwt")
        return Scheme(name, "http", key=auth)
    if kind == "apiKey":
        return Scheme(name, "apikey", location=str(node.get("in")), key=str(node.get("name")))
    return Scheme(name, "unsupported")


@dataclass(frozen=True, slots=True)
class Decision:
    status: int
    reason: str
    violation: Violation
    challenge: str


def token_scopes(claims: Mapping[str, Any]) -> frozenset[str]:
    """Scopes granted by one token's claims (``scope`` and ``scp``)."""
    scopes: set[str] = set()
    for key in ("scope", "scp"):
        value = claims.get(key)
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list):
            scopes.update(v for v in value if isinstance(v, str))
    return frozenset(scopes)


def check(
    policy: SecurityPolicy,
    metadata: Mapping[str, Any],
    headers: Mapping[str, str],
    query: Mapping[str, list[str]],
    cookies: Mapping[str, str],
) -> Decision | None:
    """``None`` when some requirement is met; otherwise why not."""
    if policy.open:
        return None
    tokens = metadata.get(JWT_METADATA)
    claim_sets: list[Mapping[str, Any]] = (
        [c for c in tokens.values() if isinstance(c, Mapping)]
        if isinstance(tokens, Mapping)
        else []
    )
    granted: list[frozenset[str]] | None = None  # worked out when a scope is required
    missing_scopes: set[str] = set()
    authenticated_somewhere = False
    for requirement in policy.requirements:
        ok = True
        for scheme, scopes in requirement:
            if scheme.kind == "jwt":
                if not claim_sets:
                    ok = False
                    continue
                authenticated_somewhere = True
                if not scopes:
                    continue  # any verified token will do
                if granted is None:
                    granted = [token_scopes(c) for c in claim_sets]
                if not any(scopes <= have for have in granted):
                    ok = False
                    missing_scopes.update(scopes)
            elif not _credential_present(scheme, headers, query, cookies):
                ok = False
        if ok:
            return None
    if authenticated_somewhere and missing_scopes:
        needed = " ".join(sorted(missing_scopes))
        return Decision(
            403,
            "insufficient_scope",
            Violation(
                "openapi.security.scope",
                "security",
                f"the token lacks a required scope ({needed})"[:300],
            ),
            f'Bearer error="insufficient_scope", scope="{needed}"'[:500],
        )
    return Decision(
        401,
        "unauthenticated",
        Violation(
            "openapi.security",
            "security",
            "the operation requires credentials: "
            + " or ".join("+".join(s.name for s, _ in r) for r in policy.requirements)[:200],
        ),
        "Bearer" if policy.uses_jwt else "",
    )


def _credential_present(
    scheme: Scheme,
    headers: Mapping[str, str],
    query: Mapping[str, list[str]],
    cookies: Mapping[str, str],
) -> bool:
    if scheme.kind == "apikey":
        if scheme.location == "header":
            return bool(headers.get(scheme.key))
        if scheme.location == "query":
            return bool(query.get(scheme.key))
        if scheme.location == "cookie":
            return bool(cookies.get(scheme.key))
        return False
    if scheme.kind == "http":
        auth = headers.get("authorization", "")
        kind, _, credential = auth.partition(" ")
        return kind.lower() == scheme.key and bool(credential.strip())
    return False
