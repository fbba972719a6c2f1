"""jwt_authn and openapi in one chain: scopes of a really verified token (metadata
``jwt_authn``) satisfy or fail the OpenAPI operation's ``security`` requirement."""

from __future__ import annotations

import yaml

from tests.filters.jwt_authn.helpers import claims, compiled, local_provider, rsa_key, send

KEY = rsa_key("k")
OK = {"200": {"description": "ok"}}
SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "t", "version": "1"},
    "paths": {
        "/orders": {"get": {"security": [{"oauth": ["orders:read"]}], "responses": OK}},
        "/public": {"get": {"security": [], "responses": OK}},
    },
    "components": {
        "securitySchemes": {
            "oauth": {
                "type": "oauth2",
                "flows": {
                    "clientCredentials": {
                        "tokenUrl": "https://idp.example/token",
                        "scopes": {"orders:read": "r"},
                    }
                },
            }
        }
    },
}


def _policy() -> str:
    return yaml.safe_dump(
        {
            "jwt": {
                "providers": {"idp": local_provider(KEY)},
                "rules": [{"match": {"prefix": "/"}, "requires": {"allowMissing": {}}}],
            },
            "openapi": {"inline": SPEC},
        }
    )


async def test_verified_scopes_reach_the_openapi_security_check():
    pol = compiled(_policy())
    assert pol.filter_names()[:3] == ("limits", "jwt_authn", "openapi")
    out = await send(pol, token=KEY.sign(claims(scope="orders:read")))
    assert out.status == 200, out.reply
    out = await send(pol, token=KEY.sign(claims(scope="other")))
    assert (out.status, out.reply.filter) == (403, "openapi")
    out = await send(pol)  # no token: jwt_authn allows (allowMissing), openapi requires one
    assert (out.status, out.reply.filter) == (401, "openapi")
    assert (await send(pol, target="/public")).status == 200


async def test_a_forged_token_never_reaches_openapi_as_claims():
    pol = compiled(_policy())
    forged = rsa_key("k").sign(claims(scope="orders:read"))  # same kid, other key
    out = await send(pol, token=forged)
    assert (out.status, out.reply.filter) == (401, "jwt_authn")
