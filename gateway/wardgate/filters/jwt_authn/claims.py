"""Claim lookups (nested with dots), per-rule claim checks, and claim values as header
values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wardgate.config.jwt import ClaimChecksSpec

_MISSING = object()


def lookup(claims: Mapping[str, Any], name: str) -> Any:
    """The claim ``name``: a top-level claim of that exact name first, else the nested
    path (``realm_access.roles``); a private sentinel when absent."""
    if name in claims:
        return claims[name]
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def present(value: Any) -> bool:
    return value is not _MISSING


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    return None


def header_value(value: Any) -> str | None:
    """A claim as a header value: scalars as text, lists of scalars comma-joined (Envoy's
    claim_to_headers); ``None`` for objects or text that cannot be a header value."""
    if isinstance(value, list):
        items = [_scalar(v) for v in value]
        if any(item is None for item in items):
            return None
        text = ",".join(item for item in items if item is not None)
    else:
        scalar = _scalar(value)
        if scalar is None:
            return None
        text = scalar
    if len(text) > 8192 or not text.isprintable():
        return None  # never let a claim inject CR/LF or control characters into headers
    return text


def _strings(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list):
        return {v for v in value if isinstance(v, str)}
    return set()


def scopes_of(claims: Mapping[str, Any]) -> set[str]:
    """Scopes granted by a token: ``scope`` (RFC 8693, space-separated) and ``scp`` (a list
    or a space-separated string)."""
    return _strings(claims.get("scope")) | _strings(claims.get("scp"))


@dataclass(frozen=True, slots=True)
class ClaimChecks:
    """A rule's compiled claim checks."""

    scopes: frozenset[str]
    roles: frozenset[str]
    roles_claim: str
    required: tuple[tuple[str, frozenset[str]], ...]

    @classmethod
    def compile(cls, spec: ClaimChecksSpec) -> ClaimChecks:
        return cls(
            scopes=frozenset(spec.scopes),
            roles=frozenset(spec.roles),
            roles_claim=spec.roles_claim,
            required=tuple((r.name, frozenset(r.values)) for r in spec.required),
        )

    def first_unmet(self, claims: Mapping[str, Any]) -> str | None:
        """The first check ``claims`` does not meet, as a public description (names the
        requirement, never the token's values); ``None`` when all are met."""
        if self.scopes and not self.scopes <= scopes_of(claims):
            return "a required scope is missing"
        if self.roles:
            granted = _strings(lookup(claims, self.roles_claim))
            if not granted & self.roles:
                return "a required role is missing"
        for name, values in self.required:
            value = lookup(claims, name)
            if not present(value):
                return f"claim {name} is missing"
            if values:
                items = value if isinstance(value, list) else []
                have = {v for v in items if isinstance(v, str)}
                scalar = _scalar(value)
                if scalar is not None:
                    have.add(scalar)
                if not have & values:
                    return f"claim {name} has no accepted value"
        return None
