"""The requests and policies of the full-policy comparison (issue 17): an RS256 key and a
694-byte bearer token, a 1 KiB JSON body, and the Wardgate policies (limits only, default
WAF, JWT + OpenAPI + default WAF) and Envoy jwt_authn config that verify the same token."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import yaml
from bench.harness.procs import ROOT

ISSUER = "https://issuer.bench"
AUDIENCE = "bench"
TOKEN_BYTES = 694
"""The size of the bearer token (a realistic RS256 access token with a few claims)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_material(token_bytes: int = TOKEN_BYTES) -> tuple[str, str]:
    """An RS256 key pair: (JWKS JSON, a token valid for an hour of ``token_bytes`` bytes,
    padded to that size with a ``scope`` claim)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.public_key().public_numbers()
    jwk = {
        "kty": "RSA",
        "kid": "bench",
        "alg": "RS256",
        "use": "sig",
        "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": _b64url(numbers.e.to_bytes(3, "big")),
    }
    header = _b64url(json.dumps({"alg": "RS256", "kid": "bench", "typ": "JWT"}).encode())
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "u1", "exp": now + 3600}

    def encoded(claims: dict[str, Any]) -> str:
        return f"{header}.{_b64url(json.dumps(claims).encode())}"

    signature_chars = len(_b64url(bytes(key.key_size // 8)))
    signing_input = encoded(claims)
    if len(signing_input) + 1 + signature_chars < token_bytes:
        # base64url: 4 characters per 3 bytes; trim the scope until the length fits.
        scope = "read:items write:items " * 40
        for cut in range(len(scope), 0, -1):
            signing_input = encoded({**claims, "scope": scope[:cut].strip() or "r"})
            if len(signing_input) + 1 + signature_chars <= token_bytes:
                break
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    token = f"{signing_input}.{_b64url(signature)}"
    return json.dumps({"keys": [jwk]}), token


def json_body(size: int = 1024) -> bytes:
    """A JSON object of exactly ``size`` bytes, like an API's create call: names, numbers,
    a nested address, tags, and free text."""
    doc: dict[str, Any] = {
        "name": "Blue wool jacket",
        "sku": "JK-2041-BL",
        "price": 129.95,
        "quantity": 3,
        "address": {"street": "12 Harbour Road", "city": "Lisbon", "zip": "1100-148"},
        "tags": ["outdoor", "winter", "wool", "sale"],
        "note": "",
    }
    base = len(json.dumps(doc, separators=(",", ":")))
    words = "Please deliver to the side door after five, ring twice. "
    doc["note"] = (words * (size // len(words) + 1))[: max(0, size - base)]
    data = json.dumps(doc, separators=(",", ":")).encode()
    assert len(data) == size, len(data)
    return data


def envoy_jwt_config(jwks: str) -> dict[str, Any]:
    """Envoy jwt_authn verifying the token of :func:`jwt_material` on every path."""
    provider = {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "local_jwks": {"inline_string": jwks},
        "forward": True,
    }
    return {
        "providers": {"bench": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
    }


PASSTHROUGH = ROOT / "bench" / "passthrough.yaml"


def limits_policy() -> dict[str, Any]:
    """``bench/passthrough.yaml``: limits only (the WAF off)."""
    doc: dict[str, Any] = yaml.safe_load(PASSTHROUGH.read_text()) or {}
    return doc


def waf_policy() -> dict[str, Any]:
    """Limits and the default WAF (on, enforcing, default rules)."""
    doc = limits_policy()
    doc.pop("waf", None)
    return doc


def full_policy(jwks: str) -> dict[str, Any]:
    """JWT (the same provider as :func:`envoy_jwt_config`) + OpenAPI (``GET /bench`` with a
    query parameter, ``POST /bench`` with a JSON body, both needing the bearer token) +
    the default WAF."""
    doc = waf_policy()
    doc["jwt"] = {
        "providers": {
            "bench": {
                "issuer": ISSUER,
                "audiences": [AUDIENCE],
                "localJwks": {"inlineString": jwks},
                "forward": True,
            }
        },
        "rules": [{"match": {"prefix": "/"}, "requires": {"providerName": "bench"}}],
    }
    doc["openapi"] = {"inline": openapi_spec()}
    return doc


def openapi_spec() -> dict[str, Any]:
    """The API of the comparison: what :func:`json_body` and ``GET /bench?x=1`` send."""
    text = {"type": "string", "maxLength": 2000}
    item = {
        "type": "object",
        "required": ["name", "sku", "price", "quantity"],
        "properties": {
            "name": {"type": "string", "maxLength": 200},
            "sku": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{4}-[A-Z]{2}$"},
            "price": {"type": "number", "minimum": 0},
            "quantity": {"type": "integer", "minimum": 1},
            "address": {
                "type": "object",
                "properties": {"street": text, "city": text, "zip": text},
            },
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
            "note": text,
        },
    }
    ok = {"200": {"description": "ok"}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "bench", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/bench": {
                "get": {
                    "operationId": "listItems",
                    "parameters": [
                        {"name": "x", "in": "query", "schema": {"type": "integer"}},
                    ],
                    "responses": ok,
                },
                "post": {
                    "operationId": "createItem",
                    "parameters": [
                        {"name": "x", "in": "query", "schema": {"type": "integer"}},
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": item}},
                    },
                    "responses": ok,
                },
            }
        },
    }


def write_policy(path: Path, doc: dict[str, Any]) -> Path:
    """``doc`` as a policy file at ``path``."""
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
