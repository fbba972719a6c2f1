"""Real keys, real signatures, JWKS documents and a chain driver for the jwt_authn tests."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from multidict import CIMultiDict

from wardgate.config import load_policy_text
from wardgate.filters.api import HttpRequest, LocalReply
from wardgate.runtime import CompiledPolicy, RequestPipeline, compile_policy

ISSUER = "https://issuer.example"
AUDIENCE = "orders"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Key:
    """A private key, its algorithm and kid, and its public JWK."""

    alg: str
    kid: str
    private: Any
    jwk: dict[str, Any] = field(default_factory=dict)

    def sign(self, claims: dict[str, Any], **headers: Any) -> str:
        hdr = {"kid": self.kid, **headers}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=hdr)


def rsa_key(kid: str = "rsa-1", alg: str = "RS256") -> Key:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    return Key(alg, kid, private, {**jwk, "kid": kid})


def ec_key(kid: str = "ec-1", alg: str = "ES256") -> Key:
    curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}[alg]
    private = ec.generate_private_key(curve)
    jwk = json.loads(ECAlgorithm.to_jwk(private.public_key()))
    return Key(alg, kid, private, {**jwk, "kid": kid})


def ed_key(kid: str = "ed-1") -> Key:
    private = ed25519.Ed25519PrivateKey.generate()
    jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    return Key("EdDSA", kid, private, {**jwk, "kid": kid})


def jwks(*keys: Key) -> str:
    return json.dumps({"keys": [k.jwk for k in keys]})


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "exp": now + 600,
        "scope": "orders:read",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def raw_token(
    header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, sig: bytes = b""
) -> str:
    """A token assembled by hand (for the malformed cases)."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return f"{b64(h)}.{b64(p)}.{b64(sig)}"


def policy(
    providers: dict[str, Any], rules: list[dict[str, Any]] | None = None, **extra: Any
) -> str:
    doc = {
        "jwt": {
            "providers": providers,
            "rules": rules
            or [{"match": {"prefix": "/"}, "requires": {"providerName": next(iter(providers))}}],
            **extra,
        }
    }
    return yaml.safe_dump(doc)


def local_provider(*keys: Key, **fields: Any) -> dict[str, Any]:
    return {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "localJwks": {"inlineString": jwks(*keys)},
        **fields,
    }


def compiled(text: str) -> CompiledPolicy:
    return compile_policy(load_policy_text(text))


@dataclass
class Outcome:
    reply: LocalReply | None
    request: HttpRequest

    @property
    def status(self) -> int:
        return 200 if self.reply is None else self.reply.status

    @property
    def reason(self) -> str:
        return "" if self.reply is None else self.reply.reason

    def header(self, name: str) -> str | None:
        if self.reply is None:
            return None
        return dict(self.reply.headers).get(name)


async def send(
    pol: CompiledPolicy,
    target: str = "/orders",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    method: str = "GET",
    token: str | None = None,
) -> Outcome:
    """Run one request through the policy's chain (decode phase) and return the result."""
    hdrs: CIMultiDict[str] = CIMultiDict(headers or {})
    hdrs.setdefault("host", "api.example")
    if token is not None:
        hdrs["authorization"] = f"Bearer {token}"
    path, _, query = target.partition("?")
    request = HttpRequest(method=method, raw_target=target, path=path, query=query, headers=hdrs)
    reply = await RequestPipeline(pol, request).decode_headers()
    return Outcome(reply, request)
