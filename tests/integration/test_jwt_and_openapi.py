"""The JWT and OpenAPI filters together, in one compiled policy: the spec's ``security``
requirements are enforced against the claims the real ``jwt_authn`` filter verified (the
``request.metadata["jwt_authn"]`` contract), with real signatures."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.filters.jwt_authn.helpers import (
    ISSUER,
    claims,
    compiled,
    local_provider,
    rsa_key,
    send,
)

KEY = rsa_key()
OTHER = rsa_key("rogue")

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "orders", "version": "1"},
    "security": [{"oauth": ["orders:read"]}],
    "components": {
        "securitySchemes": {
            "oauth": {
                "type": "oauth2",
                "flows": {
                    "clientCredentials": {
                        "tokenUrl": f"{ISSUER}/token",
                        "scopes": {"orders:read": "read", "orders:write": "write"},
                    }
                },
            }
        }
    },
    "paths": {
        "/health": {"get": {"security": [], "responses": {"200": {"description": "ok"}}}},
        "/orders": {
            "get": {"responses": {"200": {"description": "ok"}}},
            "post": {
                "security": [{"oauth": ["orders:write"]}],
                "responses": {"201": {"description": "created"}},
            },
        },
    },
}


@pytest.fixture(scope="module")
def policy():
    doc = {
        "jwt": {
            "providers": {"idp": local_provider(KEY)},
            "rules": [
                {"match": {"path": "/health"}, "requires": {"allowMissing": {}}},
                {"match": {"prefix": "/"}, "requires": {"providerName": "idp"}},
            ],
        },
        "openapi": {"inline": SPEC},
    }
    return compiled(yaml.safe_dump(doc))


async def test_the_chain_runs_jwt_before_openapi(policy):
    names = policy.filter_names()
    assert names.index("jwt_authn") < names.index("openapi")


async def test_scope_from_a_verified_token_opens_the_operation(policy):
    outcome = await send(policy, "/orders", token=KEY.sign(claims(scope="orders:read")))
    assert outcome.status == 200
    assert outcome.request.metadata["jwt_authn"]["idp"]["sub"] == "alice"


async def test_valid_token_without_the_operation_scope_is_403_from_openapi(policy):
    token = KEY.sign(claims(scope="orders:read"))
    outcome = await send(policy, "/orders", method="POST", token=token)
    assert outcome.status == 403
    assert outcome.reply is not None and outcome.reply.filter == "openapi"
    write = KEY.sign(claims(scope="orders:read orders:write"))
    assert (await send(policy, "/orders", method="POST", token=write)).status == 200


async def test_a_forged_token_never_reaches_the_scope_check(policy):
    outcome = await send(policy, "/orders", token=OTHER.sign(claims(scope="orders:read")))
    assert outcome.status == 401
    assert outcome.reply is not None and outcome.reply.filter == "jwt_authn"


async def test_public_operation_needs_no_token_but_undeclared_paths_are_refused(policy):
    assert (await send(policy, "/health")).status == 200
    token = KEY.sign(claims(scope="orders:read"))
    outcome = await send(policy, "/admin", token=token)
    assert outcome.status == 404
    assert outcome.reply is not None and outcome.reply.filter == "openapi"
