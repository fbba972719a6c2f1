"""Rules, requirement trees, claim checks, header effects (claimToHeaders, forward,
forwardPayloadHeader) and the metadata contract with later filters."""

from __future__ import annotations

import base64
import json

import pytest

from tests.filters.jwt_authn.helpers import (
    ISSUER,
    claims,
    compiled,
    ec_key,
    local_provider,
    policy,
    rsa_key,
    send,
)
from wardgate.config import PolicyError, load_policy_text

A = rsa_key("a-1")
B = ec_key("b-1")
B_ISS = "https://b.example"


def _b_provider(**fields):
    return local_provider(B, issuer=B_ISS, **fields)


def _tree(requires, **provider_fields):
    rules = [{"match": {"prefix": "/"}, "requires": requires}]
    return compiled(
        policy(
            {"a": local_provider(A, **provider_fields), "b": _b_provider(**provider_fields)},
            rules,
        )
    )


def a_token(**kw):
    return A.sign(claims(**kw))


def b_token(**kw):
    return B.sign(claims(iss=B_ISS, **kw))


async def test_requires_any_accepts_either_provider():
    pol = _tree({"requiresAny": {"requirements": [{"providerName": "a"}, {"providerName": "b"}]}})
    assert (await send(pol, token=a_token())).status == 200
    out = await send(pol, token=b_token())
    assert out.status == 200
    assert set(out.request.metadata["jwt_authn"]) == {"b"}
    assert (await send(pol)).reason == "missing"
    bad = await send(pol, token=a_token(exp=1))
    assert (bad.status, bad.reason) == (401, "expired")  # the telling failure, not "missing"


async def test_requires_all_needs_both_tokens():
    headers_a = [{"name": "x-token-a", "valuePrefix": ""}]
    headers_b = [{"name": "x-token-b"}]
    providers = {
        "a": local_provider(A, fromHeaders=headers_a),
        "b": _b_provider(fromHeaders=headers_b),
    }
    rules = [
        {
            "match": {"prefix": "/"},
            "requires": {
                "requiresAll": {"requirements": [{"providerName": "a"}, {"providerName": "b"}]}
            },
        }
    ]
    pol = compiled(policy(providers, rules))
    both = {"x-token-a": a_token(), "x-token-b": b_token()}
    out = await send(pol, headers=both)
    assert out.status == 200
    assert set(out.request.metadata["jwt_authn"]) == {"a", "b"}
    assert "x-token-a" not in out.request.headers and "x-token-b" not in out.request.headers
    assert (await send(pol, headers={"x-token-a": a_token()})).reason == "missing"


async def test_allow_missing_passes_without_token_but_not_with_a_bad_one():
    pol = _tree({"allowMissing": {}})
    out = await send(pol)
    assert out.status == 200
    assert "jwt_authn" not in out.request.metadata
    good = await send(pol, token=b_token())
    assert good.status == 200 and "b" in good.request.metadata["jwt_authn"]
    assert (await send(pol, token=a_token(exp=1))).status == 401
    assert (await send(pol, token="garbage")).status == 401


async def test_allow_missing_or_failed_lets_everything_through_with_claims_when_valid():
    pol = _tree({"allowMissingOrFailed": {}})
    assert (await send(pol, token="garbage")).status == 200
    out = await send(pol, token=a_token())
    assert out.status == 200 and out.request.metadata["jwt_authn"]["a"]["sub"] == "alice"


async def test_any_of_provider_or_allow_missing():
    pol = _tree({"requiresAny": {"requirements": [{"providerName": "a"}, {"allowMissing": {}}]}})
    assert (await send(pol)).status == 200
    assert (await send(pol, token=a_token())).status == 200
    assert (await send(pol, token=a_token(aud="other"))).status == 403


async def test_provider_and_audiences_overrides_audiences():
    pol = _tree({"providerAndAudiences": {"providerName": "a", "audiences": ["billing"]}})
    assert (await send(pol, token=a_token(aud="billing"))).status == 200
    assert (await send(pol, token=a_token())).reason == "audience"


async def test_first_matching_rule_decides_and_unmatched_is_refused():
    rules = [
        {"match": {"path": "/health"}, "skip": True},
        {"match": {"prefix": "/public", "methods": ["GET"]}, "requires": {"allowMissing": {}}},
        {"match": {"pathTemplate": "/orders/{id}"}, "requires": {"providerName": "a"}},
        {"match": {"safeRegex": {"regex": "/admin/[a-z]+"}}, "requires": {"providerName": "a"}},
    ]
    pol = compiled(policy({"a": local_provider(A)}, rules))
    assert (await send(pol, target="/health")).status == 200
    assert (await send(pol, target="/public/x")).status == 200
    out = await send(pol, target="/public/x", method="POST")
    assert (out.status, out.reason) == (403, "no_rule")
    assert (await send(pol, target="/orders/7")).reason == "missing"
    assert (await send(pol, target="/orders/7", token=a_token())).status == 200
    assert (await send(pol, target="/orders/7/items")).reason == "no_rule"
    assert (await send(pol, target="/admin/users")).reason == "missing"
    assert (await send(pol, target="/elsewhere")).reason == "no_rule"


@pytest.mark.parametrize(
    "target",
    [
        "/health/../orders",
        "/health/%2e%2e/orders",
        "//orders",
        "/./orders",
        "/health%2F..%2Forders",
    ],
)
async def test_dot_segments_and_encodings_cannot_reach_a_skipped_rule(target):
    rules = [
        {"match": {"prefix": "/health"}, "skip": True},
        {"match": {"prefix": "/"}, "requires": {"providerName": "a"}},
    ]
    pol = compiled(policy({"a": local_provider(A)}, rules))
    out = await send(pol, target=target)
    assert out.status in (400, 401), (target, out.status, out.reason)
    assert out.reason in ("missing", "ambiguous_path")


async def test_header_and_method_pseudo_header_matchers():
    rules = [
        {
            "match": {
                "prefix": "/",
                "headers": [
                    {"name": ":method", "exactMatch": "GET"},
                    {"name": "x-internal", "presentMatch": True, "invertMatch": True},
                ],
            },
            "requires": {"providerName": "a"},
        },
        {"match": {"prefix": "/"}, "skip": True},
    ]
    pol = compiled(policy({"a": local_provider(A)}, rules))
    assert (await send(pol)).reason == "missing"
    assert (await send(pol, headers={"x-internal": "1"})).status == 200
    assert (await send(pol, method="POST")).status == 200


async def test_claim_checks_scopes_roles_required_claims():
    rules = [
        {
            "match": {"prefix": "/"},
            "requires": {"providerName": "a"},
            "claims": {
                "scopes": ["orders:read"],
                "roles": ["admin", "ops"],
                "rolesClaim": "realm_access.roles",
                "required": [{"name": "tenant", "values": ["acme"]}],
            },
        }
    ]
    pol = compiled(policy({"a": local_provider(A)}, rules))
    good = claims(realm_access={"roles": ["ops"]}, tenant="acme")
    assert (await send(pol, token=A.sign(good))).status == 200
    scp = {**good, "scope": None, "scp": ["orders:read", "x"]}
    assert (await send(pol, token=A.sign({k: v for k, v in scp.items() if v}))).status == 200
    for bad in (
        {**good, "scope": "orders:write"},
        {**good, "realm_access": {"roles": ["user"]}},
        {**good, "tenant": "other"},
        {k: v for k, v in good.items() if k != "tenant"},
    ):
        out = await send(pol, token=A.sign(bad))
        assert (out.status, out.reason) == (403, "insufficient_claims")
        assert 'error="insufficient_scope"' in (out.header("www-authenticate") or "")
    assert (await send(pol)).status == 401


async def test_claim_to_headers_token_stripping_and_spoofing():
    provider = local_provider(
        A,
        claimToHeaders=[
            {"headerName": "x-user", "claimName": "sub"},
            {"headerName": "x-roles", "claimName": "realm_access.roles"},
            {"headerName": "x-admin", "claimName": "admin"},
            {"headerName": "x-obj", "claimName": "realm_access"},
        ],
        forwardPayloadHeader="x-jwt-payload",
    )
    rules = [
        {"match": {"prefix": "/open"}, "skip": True},
        {"match": {"prefix": "/"}, "requires": {"providerName": "a"}},
    ]
    pol = compiled(policy({"a": provider}, rules))
    token = A.sign(claims(realm_access={"roles": ["ops", "dev"]}, admin=True))
    out = await send(pol, token=token, headers={"x-user": "mallory", "x-obj": "forged"})
    assert out.status == 200
    h = out.request.headers
    assert h["x-user"] == "alice" and h.getall("x-user") == ["alice"]
    assert h["x-roles"] == "ops,dev" and h["x-admin"] == "true"
    assert "x-obj" not in h  # objects are not copied, and the client's value is gone
    assert "authorization" not in h  # forward: false
    payload = json.loads(base64.urlsafe_b64decode(h["x-jwt-payload"] + "=="))
    assert payload["sub"] == "alice"
    # a client cannot smuggle the trusted headers through a skipped route either
    open_ = await send(pol, target="/open", headers={"x-user": "mallory"})
    assert open_.status == 200 and "x-user" not in open_.request.headers


async def test_claim_with_newline_is_not_copied_into_a_header():
    provider = local_provider(A, claimToHeaders=[{"headerName": "x-user", "claimName": "sub"}])
    pol = compiled(policy({"a": provider}))
    out = await send(pol, token=A.sign(claims(sub="alice\r\nx-admin: true")))
    assert out.status == 200 and "x-user" not in out.request.headers


async def test_forward_true_keeps_the_token_and_cookie_tokens_are_removed():
    pol = compiled(policy({"a": local_provider(A, forward=True)}))
    token = a_token()
    out = await send(pol, token=token)
    assert out.request.headers["authorization"] == f"Bearer {token}"
    pol = compiled(policy({"a": local_provider(A, fromCookies=["session"])}))
    out = await send(pol, headers={"cookie": f"theme=dark; session={token}; lang=en"})
    assert out.status == 200
    assert out.request.headers["cookie"] == "theme=dark; lang=en"


async def test_other_authorization_values_survive_stripping():
    pol = compiled(policy({"a": local_provider(A)}))
    out = await send(pol, token=a_token(), headers=[("x-other", "1")])
    assert "authorization" not in out.request.headers and out.request.headers["x-other"] == "1"


async def test_cors_preflight_bypass_only_when_configured():
    pre = {"origin": "https://app.example", "access-control-request-method": "POST"}
    pol = compiled(policy({"a": local_provider(A)}, bypassCorsPreflight=True))
    assert (await send(pol, method="OPTIONS", headers=pre)).status == 200
    assert (await send(pol, method="OPTIONS", headers={"origin": "x"})).status == 401
    strict = compiled(policy({"a": local_provider(A)}))
    assert (await send(strict, method="OPTIONS", headers=pre)).status == 401


async def test_several_tokens_for_one_provider_must_all_be_valid():
    pol = compiled(policy({"a": local_provider(A)}))
    out = await send(pol, target=f"/orders?access_token={a_token(exp=1)}", token=a_token())
    assert out.status == 401


def _invalid(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(text)
    return info.value.problems


def test_no_jwt_needed_must_be_explicit():
    problems = _invalid(policy({"a": local_provider(A)}, [{"match": {"prefix": "/"}}]))
    assert any("requires" in p and "skip" in p for p in problems)
    problems = _invalid(
        policy({"a": local_provider(A)}, [{"match": {"prefix": "/"}, "requires": {}}])
    )
    assert any("exactly one of" in p for p in problems)


def test_schema_errors_are_specific():
    assert any(
        "unknown provider" in p
        for p in _invalid(
            policy(
                {"a": local_provider(A)},
                [{"match": {"prefix": "/"}, "requires": {"providerName": "zz"}}],
            )
        )
    )
    assert any(
        "jwt.providers.a" in p and "exactly one of" in p
        for p in _invalid(policy({"a": {"issuer": "x"}}))
    )
    assert any(
        "fromHeadres" in p for p in _invalid(policy({"a": local_provider(A, fromHeadres=[])}))
    )


def test_compile_errors_name_the_field(tmp_path):
    from wardgate.runtime import load_compiled

    path = tmp_path / "p.yaml"
    path.write_text(policy({"a": {"localJwks": {"filename": str(tmp_path / "missing.json")}}}))
    with pytest.raises(PolicyError) as info:
        load_compiled(path)
    assert any(p.startswith("jwt.providers.a.localJwks.filename") for p in info.value.problems)
    path.write_text(policy({"a": {"localJwks": {"inlineString": '{"keys": []}'}}}))
    with pytest.raises(PolicyError) as info:
        load_compiled(path)
    assert any("no usable key" in p for p in info.value.problems)
    rules = [{"match": {"safeRegex": {"regex": "(a"}}, "requires": {"providerName": "a"}}]
    path.write_text(policy({"a": local_provider(A)}, rules))
    with pytest.raises(PolicyError) as info:
        load_compiled(path)
    assert any("jwt.rules[0].match.safeRegex.regex" in p for p in info.value.problems)


def test_query_token_stripping_limitation_is_reported():
    pol = compiled(policy({"a": local_provider(A)}))
    assert any("query parameters" in text for text in pol.limitations())
    pol = compiled(
        policy(
            {
                "a": local_provider(
                    A, fromHeaders=[{"name": "authorization", "valuePrefix": "Bearer "}]
                )
            }
        )
    )
    assert pol.limitations() == ()
    remote = {"remoteJwks": {"httpUri": {"uri": "http://idp.internal/jwks"}}}
    pol = compiled(policy({"a": {**remote, "fromHeaders": [{"name": "x-t"}]}}))
    assert any("plain http" in text for text in pol.limitations())


async def test_a_rotated_kubernetes_secret_is_picked_up_on_unknown_kid(tmp_path):
    """The kubelet updates a mounted Secret by swapping the ``..data`` symlink."""
    import os

    from tests.filters.jwt_authn.helpers import jwks

    mount = tmp_path / "secret"
    mount.mkdir()
    (mount / "..v1").mkdir()
    (mount / "..v1" / "jwks.json").write_text(jwks(A))
    os.symlink("..v1", mount / "..data")
    os.symlink("..data/jwks.json", mount / "jwks.json")
    provider = {"issuer": ISSUER, "localJwks": {"filename": str(mount / "jwks.json")}}
    pol = compiled(policy({"a": provider}))
    assert (await send(pol, token=a_token())).status == 200
    rotated = rsa_key("a-2")
    (mount / "..v2").mkdir()
    (mount / "..v2" / "jwks.json").write_text(jwks(rotated))
    os.symlink("..v2", mount / "..data.tmp")
    os.replace(mount / "..data.tmp", mount / "..data")
    out = await send(pol, token=rotated.sign(claims()))
    assert out.status == 200, out.reason
    # the old key is gone with the rotation (cache entries are tied to the key set)
    assert (await send(pol, token=a_token())).status == 401


def test_a_relative_jwks_file_is_relative_to_the_policy_file(tmp_path):
    from tests.filters.jwt_authn.helpers import jwks
    from wardgate.runtime import load_compiled

    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "jwks.json").write_text(jwks(A))
    path = tmp_path / "policy.yaml"
    path.write_text(policy({"a": {"issuer": ISSUER, "localJwks": {"filename": "keys/jwks.json"}}}))
    compiled_policy = load_compiled(path)  # from another working directory (the repo root)
    assert compiled_policy.spec.jwt.providers["a"].local_jwks.filename == str(
        tmp_path / "keys" / "jwks.json"
    )


async def test_too_many_tokens_are_refused_before_verifying_them():
    pol = compiled(policy({"a": local_provider(A)}))
    many = [("authorization", f"Bearer {a_token(n=i)}") for i in range(5)]
    out = await send(pol, headers=many)
    assert (out.status, out.reason) == (401, "malformed")
    provider = pol.filters[1].providers["a"]  # type: ignore[attr-defined]
    assert len(provider._cache) == 0  # none was verified
    out = await send(pol, headers=many[:2])
    assert out.status == 200  # two valid tokens are fine
