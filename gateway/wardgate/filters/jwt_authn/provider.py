"""One compiled provider: token locations, key source, and the verification of a token
(structure, issuer, times, audience, subject, signature), with a bounded cache of
verified tokens."""

from __future__ import annotations

import hashlib
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wardgate.config.jwt import JwtProviderSpec
from wardgate.filters.api import FilterCompileError
from wardgate.filters.jwt_authn import stats
from wardgate.filters.jwt_authn.claims import header_value, lookup, present
from wardgate.filters.jwt_authn.extract import Location, locations
from wardgate.filters.jwt_authn.jose import TokenError, parse_token
from wardgate.filters.jwt_authn.jwks import (
    FetchSettings,
    FileKeys,
    JwksUnavailable,
    LocalKeys,
    RemoteJwks,
    remote_jwks,
)
from wardgate.filters.jwt_authn.keys import JwksError, parse_jwks
from wardgate.filters.jwt_authn.matching import string_matcher


def _check_ca(filename: str | None, data: str | None, where: str) -> None:
    """Refuse at compile time a CA bundle that cannot be used (fail fast in CI)."""
    try:
        ssl.create_default_context(cafile=filename, cadata=data)
    except OSError as exc:
        field = "filename" if filename is not None else "inlineString"
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise FilterCompileError([f"{where}.{field}: not a usable CA bundle: {reason}"]) from None


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a token (or its absence) does not satisfy a requirement."""

    reason: str
    message: str
    provider: str
    location: str = "token"

    @property
    def status(self) -> int:
        if self.reason == "jwks_unavailable":
            return 503
        if self.reason in ("insufficient_claims", "audience"):
            return 403  # audience: as Envoy ("Audiences in Jwt are not allowed")
        return 401


@dataclass(frozen=True, slots=True)
class Verified:
    claims: dict[str, Any]
    payload_segment: str


@dataclass(slots=True)
class _CacheEntry:
    claims: dict[str, Any]
    payload_segment: str
    key_version: int
    expires: float


class Provider:
    """A provider compiled for one policy generation."""

    def __init__(self, name: str, spec: JwtProviderSpec, max_token_bytes: int) -> None:
        where = f"jwt.providers.{name}"
        self.name = name
        self.issuer = spec.issuer
        self.audiences = frozenset(spec.audiences)
        self.subject = string_matcher(spec.subjects, f"{where}.subjects") if spec.subjects else None
        self.locations: tuple[Location, ...] = locations(spec)
        self.param_names = frozenset(x.name for x in self.locations if x.kind == "param")
        """Query parameters that may carry a token (checked per request: kept here)."""
        self.reads_cookies = any(x.kind == "cookie" for x in self.locations)
        self.forward = spec.forward
        self.forward_payload_header = spec.forward_payload_header
        self.pad_payload = spec.pad_forward_payload_header
        self.claim_to_headers = tuple((c.header_name, c.claim_name) for c in spec.claim_to_headers)
        self.skew = spec.clock_skew_seconds
        self.require_expiration = spec.require_expiration
        self.max_lifetime = spec.max_lifetime
        self.max_token_bytes = max_token_bytes
        self.cache_size = spec.jwt_cache_config.jwt_cache_size
        self._cache: OrderedDict[bytes, _CacheEntry] = OrderedDict()
        self.keys: LocalKeys | RemoteJwks
        if spec.local_jwks is not None:
            local = spec.local_jwks
            try:
                if local.filename is not None:
                    data = Path(local.filename).read_bytes()
                    keyset = parse_jwks(data, allow_symmetric=True, source=where)
                    self.keys = FileKeys(keyset, local.filename, where)
                else:
                    assert local.inline_string is not None
                    data = local.inline_string.encode()
                    self.keys = LocalKeys(parse_jwks(data, allow_symmetric=True, source=where))
            except OSError as exc:
                raise FilterCompileError(
                    [f"{where}.localJwks.filename: cannot read: {exc.strerror or exc}"]
                ) from None
            except JwksError as exc:
                raise FilterCompileError([f"{where}.localJwks: invalid JWKS: {exc}"]) from None
        else:
            remote = spec.remote_jwks
            assert remote is not None
            retry = remote.retry_policy
            async_fetch = remote.async_fetch
            trusted = remote.trusted_ca
            if trusted is not None:
                _check_ca(trusted.filename, trusted.inline_string, f"{where}.remoteJwks.trustedCa")
            self.keys = remote_jwks(
                FetchSettings(
                    uri=remote.http_uri.uri,
                    timeout=remote.http_uri.timeout,
                    cache_duration=remote.cache_duration,
                    max_staleness=remote.max_staleness,
                    min_refresh_interval=remote.min_refresh_interval,
                    failed_refetch=async_fetch.failed_refetch_duration if async_fetch else 1.0,
                    retries=retry.num_retries if retry else 0,
                    backoff_base=retry.retry_back_off.base_interval if retry else 0.2,
                    backoff_max=(
                        (
                            retry.retry_back_off.max_interval
                            or 10 * retry.retry_back_off.base_interval
                        )
                        if retry
                        else 2.0
                    ),
                    ca_file=trusted.filename if trusted else None,
                    ca_data=trusted.inline_string if trusted else None,
                )
            )

    def fail(self, reason: str, message: str, location: str = "token") -> Failure:
        return Failure(reason, message, self.name, location)

    async def verify(
        self, token: str, audiences: frozenset[str] | None = None, location: str = "token"
    ) -> Verified | Failure:
        """Verify ``token`` for this provider (``audiences`` replaces the provider's own,
        for ``providerAndAudiences``). Never raises on bad input."""
        wanted = self.audiences if audiences is None else audiences
        if len(token) > self.max_token_bytes:
            return self.fail("malformed", "the token is too large", location)
        digest = hashlib.sha256(token.encode()).digest()
        entry = self._cache.get(digest) if self.cache_size else None
        if entry is not None:
            # The exact same bytes were parsed and their signature verified with this key
            # set; the claim checks (time, issuer, audience, subject) still run every time.
            if entry.key_version == self.keys.version and time.time() <= entry.expires:
                problem = self._check_claims(entry.claims, wanted)
                if problem is not None:
                    return self.fail(*problem, location=location)
                stats.CACHE_HITS.inc()
                self._cache.move_to_end(digest)
                return Verified(entry.claims, entry.payload_segment)
            self._cache.pop(digest, None)
        try:
            parsed = parse_token(token, self.max_token_bytes)
        except TokenError as exc:
            return self.fail(exc.reason, exc.message, location)
        claims = parsed.claims
        problem = self._check_claims(claims, wanted)
        if problem is not None:
            return self.fail(*problem, location=location)
        try:
            keys = await self.keys.current()
        except JwksUnavailable:
            return self.fail("jwks_unavailable", "the issuer's keys are not available", location)
        alg, kid = parsed.alg, parsed.kid
        candidates, known = keys.candidates(alg, kid)
        if not known:
            refreshed = await self.keys.refresh_for_unknown_kid()
            if refreshed is not None:
                keys = refreshed
                candidates, known = keys.candidates(alg, kid)
            if not known:
                return self.fail("unknown_kid", "the token kid is unknown", location)
        if not candidates:
            if not any(alg in k.algorithms for k in keys.keys):
                return self.fail("bad_algorithm", "the token algorithm is not accepted", location)
            return self.fail("bad_signature", "the token signature is invalid", location)
        if not any(k.verify(alg, parsed.signing_input, parsed.signature) for k in candidates):
            return self.fail("bad_signature", "the token signature is invalid", location)
        if self.cache_size:
            exp = claims.get("exp")
            self._cache[digest] = _CacheEntry(
                claims,
                parsed.payload_segment,
                self.keys.version,
                float(exp) + self.skew if exp is not None else time.time() + 300,
            )
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return Verified(claims, parsed.payload_segment)

    def _check_claims(
        self, claims: dict[str, Any], audiences: frozenset[str]
    ) -> tuple[str, str] | None:
        now = time.time()
        if self.issuer is not None and claims.get("iss") != self.issuer:
            return ("unknown_issuer", "the token issuer is not accepted")
        exp, nbf, iat = claims.get("exp"), claims.get("nbf"), claims.get("iat")
        if exp is None and self.require_expiration:
            return ("malformed", "the token has no expiry")
        if exp is not None and now > exp + self.skew:
            return ("expired", "the token is expired")
        if nbf is not None and nbf > now + self.skew:
            return ("not_yet_valid", "the token is not valid yet")
        if iat is not None and iat > now + self.skew:
            return ("not_yet_valid", "the token was issued in the future")
        if self.max_lifetime is not None:
            if exp is None or iat is None:
                return ("malformed", "the token needs exp and iat (maxLifetime)")
            if exp - iat > self.max_lifetime:
                return ("expired", "the token lifetime is too long")
        if audiences:
            aud = claims.get("aud")
            granted = {aud} if isinstance(aud, str) else set(aud or ())
            if not granted & audiences:
                return ("audience", "the token audience is not accepted")
        if self.subject is not None:
            sub = claims.get("sub")
            if not isinstance(sub, str) or not self.subject(sub):
                return ("subject", "the token subject is not accepted")
        return None

    def header_values(self, verified: Verified) -> list[tuple[str, str]]:
        """Headers to set for the upstream from a verified token."""
        out = []
        for header, claim in self.claim_to_headers:
            value = lookup(verified.claims, claim)
            if present(value):
                text = header_value(value)
                if text is not None:
                    out.append((header, text))
        if self.forward_payload_header is not None:
            payload = verified.payload_segment
            if self.pad_payload:
                payload += "=" * (-len(payload) % 4)
            out.append((self.forward_payload_header, payload))
        return out

    def reserved_headers(self) -> set[str]:
        """Headers only the gateway may set (clients' copies are removed)."""
        names = {h for h, _ in self.claim_to_headers}
        if self.forward_payload_header is not None:
            names.add(self.forward_payload_header)
        return names
