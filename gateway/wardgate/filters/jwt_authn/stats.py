"""Metrics of the ``jwt_authn`` filter (bounded labels: reason codes and results only)."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

DECISIONS = Counter(
    "wardgate_jwt_decisions",
    "JWT decisions by result (allowed, refused, skipped) and reason code (ok, missing, "
    "malformed, bad_algorithm, expired, not_yet_valid, bad_signature, unknown_issuer, "
    "audience, subject, unknown_kid, jwks_unavailable, insufficient_claims, no_rule, "
    "ambiguous_path, cors_preflight, skip, allow_missing).",
    ["result", "reason"],
)
JWKS_FETCHES = Counter(
    "wardgate_jwt_jwks_fetches",
    "Remote JWKS fetches by result (success, timeout, connect_error, tls_error, http_status, "
    "invalid).",
    ["result"],
)
JWKS_STALE = Counter(
    "wardgate_jwt_jwks_stale_uses",
    "Requests verified with keys older than cacheDuration because the provider was "
    "unreachable (within maxStaleness).",
)
CACHE_HITS = Counter(
    "wardgate_jwt_verified_cache_hits",
    "Tokens whose signature check was answered by the verified-token cache.",
)

_CHILDREN: dict[tuple[str, str], Any] = {}


def count_decision(result: str, reason: str) -> None:
    """Count one decision (label children cached: this runs on every request)."""
    key = (result, reason)
    child = _CHILDREN.get(key)
    if child is None:
        child = _CHILDREN[key] = DECISIONS.labels(result=result, reason=reason)
    child.inc()
