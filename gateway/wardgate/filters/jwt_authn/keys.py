"""JWKS (RFC 7517) parsing into verification keys, and signature checks (RFC 7518).

A key verifies only the algorithms of its own type: RSA keys RS*/PS*, EC keys the ES*
algorithm of their curve, OKP keys EdDSA, ``oct`` keys HS* — and ``oct`` keys only when the
key set allows them (a ``localJwks``). So an RSA public key can never be used as an HMAC
secret (the classic algorithm-confusion attack). Keys are parsed once, when a JWKS is
loaded or fetched, never per request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from wardgate.filters.jwt_authn.jose import TokenError, b64url_decode, parse_json_object

log = logging.getLogger("wardgate.jwt_authn")

MIN_RSA_BITS = 2048
MAX_JWKS_KEYS = 100

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_CURVES: dict[str, tuple[ec.EllipticCurve, str, int]] = {
    # crv -> (curve, the one ES algorithm it signs, byte length of r and s)
    "P-256": (ec.SECP256R1(), "ES256", 32),
    "P-384": (ec.SECP384R1(), "ES384", 48),
    "P-521": (ec.SECP521R1(), "ES512", 66),
}
_ORDERS = {
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ES384": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
    "ES512": int(
        "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
        16,
    ),
}


class JwksError(Exception):
    """A JWKS document that cannot be used (message safe to log: no key material)."""


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """One usable key: its ``kid`` (or ``None``), the algorithms it may verify, and the
    public key object (or the HMAC secret)."""

    kid: str | None
    algorithms: frozenset[str]
    key: Any

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is valid for ``signing_input`` under ``alg``."""
        if alg not in self.algorithms:
            return False
        family, bits = alg[:2], alg[2:]
        try:
            if family == "RS":
                self.key.verify(signature, signing_input, padding.PKCS1v15(), _HASHES[bits]())
            elif family == "PS":
                digest = _HASHES[bits]()
                self.key.verify(
                    signature,
                    signing_input,
                    padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size),
                    digest,
                )
            elif family == "ES":
                der = _ecdsa_der(alg, signature)
                if der is None:
                    return False
                self.key.verify(der, signing_input, ec.ECDSA(_HASHES[bits]()))
            elif alg == "EdDSA":
                self.key.verify(signature, signing_input)
            elif family == "HS":
                expected = hmac.new(self.key, signing_input, getattr(hashlib, f"sha{bits}"))
                return hmac.compare_digest(expected.digest(), signature)
            else:
                return False
        except InvalidSignature:
            return False
        return True


def _ecdsa_der(alg: str, signature: bytes) -> bytes | None:
    """JWS ECDSA signatures are ``r || s``, fixed length (RFC 7518 3.4). Refuse any other
    length and r or s outside [1, n-1] before the library sees them."""
    size = {"ES256": 32, "ES384": 48, "ES512": 66}[alg]
    if len(signature) != 2 * size:
        return None
    r = int.from_bytes(signature[:size], "big")
    s = int.from_bytes(signature[size:], "big")
    order = _ORDERS[alg]
    if not (0 < r < order and 0 < s < order):
        return None
    return encode_dss_signature(r, s)


@dataclass(frozen=True, slots=True)
class KeySet:
    """The usable keys of one JWKS document."""

    keys: tuple[VerifyKey, ...]

    def candidates(self, alg: str, kid: str | None) -> tuple[list[VerifyKey], bool]:
        """Keys that may verify ``alg`` (with ``kid`` when the token names one), and
        whether the ``kid`` is known at all (``True`` when the token has none)."""
        if kid is None:
            return [k for k in self.keys if alg in k.algorithms], True
        named = [k for k in self.keys if k.kid == kid]
        return [k for k in named if alg in k.algorithms], bool(named)


def _int(jwk: dict[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise JwksError(f"missing {name}")
    try:
        return int.from_bytes(b64url_decode(value), "big")
    except TokenError:
        raise JwksError(f"{name} is not base64url") from None


def _bytes(jwk: dict[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise JwksError(f"missing {name}")
    try:
        return b64url_decode(value)
    except TokenError:
        raise JwksError(f"{name} is not base64url") from None


def parse_jwk(jwk: dict[str, Any], allow_symmetric: bool) -> VerifyKey:
    """One JWK into a :class:`VerifyKey`. Raises :class:`JwksError` for unusable keys."""
    kty = jwk.get("kty")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise JwksError("not a signing key (use)")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise JwksError("not a verification key (key_ops)")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise JwksError("kid is not a string")
    declared = jwk.get("alg")
    if declared is not None and not isinstance(declared, str):
        raise JwksError("alg is not a string")
    algorithms: set[str]
    key: Any
    if kty == "RSA":
        n, e = _int(jwk, "n"), _int(jwk, "e")
        if n.bit_length() < MIN_RSA_BITS:
            raise JwksError(f"RSA key shorter than {MIN_RSA_BITS} bits")
        try:
            key = rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError:
            raise JwksError("invalid RSA key") from None
        algorithms = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    elif kty == "EC":
        crv = jwk.get("crv")
        if crv not in _CURVES:
            raise JwksError("unsupported EC curve")
        curve, alg, size = _CURVES[crv]
        x, y = _bytes(jwk, "x"), _bytes(jwk, "y")
        if len(x) != size or len(y) != size:
            raise JwksError("EC coordinates have the wrong length")
        try:
            key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
            ).public_key()
        except ValueError:
            raise JwksError("EC point is not on the curve") from None
        algorithms = {alg}
    elif kty == "OKP":
        crv = jwk.get("crv")
        x = _bytes(jwk, "x")
        try:
            if crv == "Ed25519":
                key = ed25519.Ed25519PublicKey.from_public_bytes(x)
            elif crv == "Ed448":
                key = ed448.Ed448PublicKey.from_public_bytes(x)
            else:
                raise JwksError("unsupported OKP curve")
        except ValueError:
            raise JwksError("invalid OKP key") from None
        algorithms = {"EdDSA"}
    elif kty == "oct":
        if not allow_symmetric:
            raise JwksError("symmetric keys are accepted only in a localJwks")
        key = _bytes(jwk, "k")
        if len(key) < 32:
            raise JwksError("HMAC key shorter than 256 bits")
        # RFC 7518 3.2: the key must be at least as long as the hash output.
        algorithms = {a for a, n in (("HS256", 32), ("HS384", 48), ("HS512", 64)) if len(key) >= n}
    else:
        raise JwksError("unsupported key type")
    if declared is not None:
        if declared not in algorithms:
            raise JwksError("alg does not fit the key type")
        algorithms = {declared}
    return VerifyKey(kid=kid, algorithms=frozenset(algorithms), key=key)


def parse_jwks(data: bytes, allow_symmetric: bool, source: str) -> KeySet:
    """Parse a JWKS document. Single unusable keys are skipped (and logged by index and
    reason); a document without any usable key raises :class:`JwksError`. A bare JWK (not
    wrapped in ``keys``) is accepted, as Envoy does."""
    try:
        doc = parse_json_object(data, "JWKS")
    except TokenError:
        raise JwksError("not a JSON object (duplicate keys are refused)") from None
    raw_keys: Iterable[Any]
    if "keys" in doc:
        if not isinstance(doc["keys"], list):
            raise JwksError("keys is not a list")
        raw_keys = doc["keys"]
    else:
        raw_keys = [doc]
    keys: list[VerifyKey] = []
    for index, jwk in enumerate(raw_keys):
        if index >= MAX_JWKS_KEYS:
            raise JwksError(f"more than {MAX_JWKS_KEYS} keys")
        if not isinstance(jwk, dict):
            raise JwksError(f"keys[{index}] is not an object")
        try:
            keys.append(parse_jwk(jwk, allow_symmetric))
        except JwksError as exc:
            log.warning(
                "JWKS key skipped",
                extra={"wardgate": {"jwks": source, "key_index": index, "problem": str(exc)}},
            )
    if not keys:
        raise JwksError("no usable key")
    return KeySet(tuple(keys))
