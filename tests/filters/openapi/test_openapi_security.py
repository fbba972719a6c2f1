"""The spec's security requirements enforced against the claims jwt_authn verified."""

from __future__ import annotations

import pytest

from tests.filters.openapi.helpers import decide, minimal_spec, policy_for
from wardgate.filters.openapi.security import token_scopes

OK = {"200": {"description": "ok"}}


def _spec():
    return minimal_spec(
        {
            "/public": {"get": {"security": [], "responses": OK}},
            "/read": {"get": {"responses": OK}},  # root security applies
            "/write": {
                "post": {"security": [{"oauth": ["pets:write", "pets:read"]}], "responses": OK}
            },
            "/either": {"get": {"security": [{"oauth": ["admin"]}, {"key": []}], "responses": OK}},
            "/both": {"get": {"security": [{"bearer": [], "key": []}], "responses": OK}},
            "/optional": {"get": {"security": [{}, {"bearer": []}], "responses": OK}},
            "/basic": {"get": {"security": [{"basic": []}], "responses": OK}},
            "/mtls": {"get": {"security": [{"mtls": []}], "responses": OK}},
        },
        "3.1.0",
        security=[{"oauth": ["pets:read"]}],
        components={
            "securitySchemes": {
                "oauth": {
                    "type": "oauth2",
                    "flows": {
                        "clientCredentials": {
                            "tokenUrl": "https://idp.example/token",
                            "scopes": {"pets:read": "r", "pets:write": "w", "admin": "a"},
                        }
                    },
                },
                "bearer": {"type": "http", "scheme": "bearer"},
                "key": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "basic": {"type": "http", "scheme": "basic"},
                "mtls": {"type": "mutualTLS"},
            }
        },
    )


@pytest.fixture(scope="module")
def policy():
    return policy_for(_spec())


def claims(scope=None, scp=None, provider="idp"):
    token = {"sub": "alice"}
    if scope is not None:
        token["scope"] = scope
    if scp is not None:
        token["scp"] = scp
    return {"jwt_authn": {provider: token}}


async def test_operations_without_requirements_need_nothing(policy):
    assert (await decide(policy, "GET", "/public", metadata={}))["decision"] == "allow"
    assert (await decide(policy, "GET", "/optional", metadata={}))["decision"] == "allow"


async def test_no_verified_token_is_401_with_a_bearer_challenge(policy):
    result = await decide(policy, "GET", "/read", metadata={})
    assert (result["status"], result["reason"]) == (401, "unauthenticated")
    assert result["headers"]["www-authenticate"] == "Bearer"
    # A raw Authorization header is not a verified token: only jwt_authn's claims count.
    result = await decide(policy, "GET", "/read", {"authorization": "Bearer forged"}, metadata={})
    assert result["status"] == 401


async def test_scopes_from_scope_or_scp(policy):
    for meta in [claims("pets:read"), claims(scp=["pets:read"]), claims(scp="pets:read other")]:
        assert (await decide(policy, "GET", "/read", metadata=meta))["decision"] == "allow"
    ok = claims("pets:read pets:write")
    assert (await decide(policy, "POST", "/write", metadata=ok))["decision"] == "allow"


async def test_missing_scope_is_403_insufficient_scope_without_echoing_token_scopes(policy):
    result = await decide(policy, "POST", "/write", metadata=claims("pets:read secret:scope"))
    assert (result["status"], result["reason"]) == (403, "insufficient_scope")
    challenge = result["headers"]["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge and "pets:write" in challenge
    assert "secret:scope" not in str(result)


async def test_alternatives_and_conjunctions(policy):
    # OR: an admin token, or an API key.
    assert (await decide(policy, "GET", "/either", {"x-api-key": "k"}, metadata={}))[
        "decision"
    ] == "allow"
    assert (await decide(policy, "GET", "/either", metadata=claims("admin")))["decision"] == "allow"
    assert (await decide(policy, "GET", "/either", metadata=claims("pets:read")))["status"] == 403
    # AND: a token and an API key.
    assert (await decide(policy, "GET", "/both", metadata=claims("")))["status"] == 401
    both = await decide(policy, "GET", "/both", {"x-api-key": "k"}, metadata=claims(""))
    assert both["decision"] == "allow"


async def test_presence_only_schemes_and_unsupported_ones(policy):
    assert (await decide(policy, "GET", "/basic", metadata={}))["status"] == 401
    ok = await decide(policy, "GET", "/basic", {"authorization": "Basic YTpi"}, metadata={})
    assert ok["decision"] == "allow"
    # mutualTLS cannot be checked here: never met (fail closed).
    assert (await decide(policy, "GET", "/mtls", metadata=claims("admin")))["status"] == 401


async def test_security_checks_come_before_parameter_checks():
    spec = _spec()
    spec["paths"]["/read"]["get"]["parameters"] = [
        {"name": "n", "in": "query", "required": True, "schema": {"type": "integer"}}
    ]
    result = await decide(policy_for(spec), "GET", "/read?n=x", metadata={})
    assert result["status"] == 401


async def test_security_ignore_and_limitations():
    ignoring = policy_for(_spec(), security="ignore")
    assert (await decide(ignoring, "GET", "/read", metadata={}))["decision"] == "allow"
    assert any("not checked (security: ignore)" in n for n in ignoring.limitations())
    enforcing = policy_for(_spec())
    notes = "\n".join(enforcing.limitations())
    assert "jwt section is not configured" in notes and "fail closed" in notes
    assert "presence only" in notes and "basic" in notes and "key" in notes


async def test_detect_mode_records_the_missing_credentials():
    policy = policy_for(_spec(), mode="detect")
    result = await decide(policy, "GET", "/read", metadata={})
    assert result["decision"] == "allow"
    assert result["detected"][0]["ruleId"] == "openapi.security"


def test_token_scopes_ignores_non_strings():
    assert token_scopes({"scope": "a  b", "scp": ["c", 1, None]}) == frozenset({"a", "b", "c"})
    assert token_scopes({"scope": 5}) == frozenset()
