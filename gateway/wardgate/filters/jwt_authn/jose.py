"""Strict parsing of a compact JWS (RFC 7515) carrying a JWT (RFC 7519).

Everything here runs on attacker-controlled bytes, before any key is looked at, and refuses
anything ambiguous: non-canonical base64url, duplicate JSON keys, ``alg: none`` in any
spelling, unknown ``crit`` extensions, key-carrying headers (``jku``, ``x5u``, ``jwk``,
``x5c``: never fetched, never trusted), non-numeric or out-of-range time claims. No regular
expressions are used.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

SUPPORTED_ALGORITHMS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        "EdDSA",
        "HS256",
        "HS384",
        "HS512",
    }
)

KEY_HEADERS = ("jku", "x5u", "jwk", "x5c")
"""Header parameters that point at or embed a key: refused outright."""

MAX_TIME = 253402300799
"""9999-12-31T23:59:59Z: time claims beyond this (or negative) are refused."""

_B64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class TokenError(Exception):
    """A token refused while parsing. ``reason`` is a stable code (``malformed``,
    ``bad_algorithm``), ``message`` a short public description (never token content)."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ParsedToken:
    """A token whose structure is valid; its signature is not checked yet."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes
    payload_segment: str

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def b64url_decode(segment: str) -> bytes:
    """Decode unpadded base64url, refusing padding, foreign characters and non-canonical
    encodings (stray bits in the last character), so one token has exactly one spelling."""
    raw = segment.encode("ascii", "strict") if segment.isascii() else None
    if raw is None or raw.translate(None, _B64URL):
        raise TokenError("malformed", "the token is not base64url")
    if len(raw) % 4 == 1:
        raise TokenError("malformed", "the token is not base64url")
    try:
        decoded = base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise TokenError("malformed", "the token is not base64url") from None
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != raw:
        raise TokenError("malformed", "the token is not canonical base64url")
    return decoded


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise TokenError("malformed", "the token has a duplicate JSON member")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise TokenError("malformed", "the token has a non-standard JSON number")


def parse_json_object(data: bytes, what: str) -> dict[str, Any]:
    """Strict JSON: UTF-8, an object, no duplicate keys, no NaN/Infinity."""
    try:
        text = data.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except TokenError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise TokenError("malformed", f"the token {what} is not JSON") from None
    if not isinstance(value, dict):
        raise TokenError("malformed", f"the token {what} is not a JSON object")
    return value


def parse_token(token: str, max_bytes: int) -> ParsedToken:
    """Parse and structurally check ``token``. Raises :class:`TokenError`."""
    if len(token) > max_bytes:
        raise TokenError("malformed", "the token is too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed", "the token is not a compact JWS")
    header_b64, payload_b64, signature_b64 = parts
    if not header_b64 or not payload_b64:
        raise TokenError("malformed", "the token is not a compact JWS")
    header = parse_json_object(b64url_decode(header_b64), "header")
    _check_header(header)
    if not signature_b64:
        raise TokenError("malformed", "the token is not signed")
    signature = b64url_decode(signature_b64)
    claims = parse_json_object(b64url_decode(payload_b64), "payload")
    check_claim_types(claims)
    return ParsedToken(
        header=header,
        claims=claims,
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        signature=signature,
        payload_segment=payload_b64,
    )


def _check_header(header: dict[str, Any]) -> None:
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenError("malformed", "the token header has no algorithm")
    if alg.strip().lower() == "none" or alg not in SUPPORTED_ALGORITHMS:
        # "none", "None", "NONE", " none"...: unsigned tokens are never accepted.
        raise TokenError("bad_algorithm", "the token algorithm is not accepted")
    for name in KEY_HEADERS:
        if name in header:
            raise TokenError("malformed", "the token header carries a key reference")
    if "crit" in header:
        # RFC 7515 4.1.11: extensions listed in crit must be understood; Wardgate
        # implements none (b64=false included), so any crit refuses the token.
        raise TokenError("malformed", "the token header has critical extensions")
    if "b64" in header:
        raise TokenError("malformed", "the token header uses an unsupported extension")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenError("malformed", "the token kid is not a string")


def check_claim_types(claims: dict[str, Any]) -> None:
    """Registered claims must have their registered types (RFC 7519 4.1)."""
    for name in ("exp", "nbf", "iat"):
        if name in claims:
            value = claims[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TokenError("malformed", f"the token {name} is not a number")
            if not math.isfinite(value) or value < 0 or value > MAX_TIME:
                raise TokenError("malformed", f"the token {name} is out of range")
    for name in ("iss", "sub", "jti"):
        if name in claims and not isinstance(claims[name], str):
            raise TokenError("malformed", f"the token {name} is not a string")
    if "aud" in claims:
        aud = claims["aud"]
        if not isinstance(aud, str) and not (
            isinstance(aud, list) and all(isinstance(a, str) for a in aud)
        ):
            raise TokenError("malformed", "the token aud is not a string or list of strings")
