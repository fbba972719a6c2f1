"""jwt_authn behind Envoy (the ext_authz decision core): token stripping and claim headers
become header changes Envoy applies; refusals keep their status and WWW-Authenticate."""

from __future__ import annotations

from tests.filters.jwt_authn.helpers import claims, compiled, local_provider, policy, rsa_key
from wardgate.envoy.decision import CheckInput, decide

KEY = rsa_key("k")
POLICY = compiled(
    policy(
        {"idp": local_provider(KEY, claimToHeaders=[{"headerName": "x-user", "claimName": "sub"}])}
    )
)


def _check(token: str | None, extra: tuple[tuple[str, str], ...] = ()) -> CheckInput:
    headers = [(":authority", "api.example"), (":path", "/orders"), (":method", "GET")]
    if token is not None:
        headers.append(("authorization", f"Bearer {token}"))
    return CheckInput(method="GET", target="/orders", headers=(*headers, *extra))


async def test_allowed_decision_removes_the_token_and_sets_claim_headers():
    decision = await decide(POLICY, _check(KEY.sign(claims()), (("x-user", "mallory"),)))
    assert decision.allowed
    assert "authorization" in decision.upstream_remove
    assert ("x-user", "alice") in decision.upstream_set


async def test_refusals_keep_status_reason_and_challenge():
    decision = await decide(POLICY, _check(None))
    assert (decision.allowed, decision.status, decision.reason) == (False, 401, "missing")
    assert dict(decision.headers)["www-authenticate"].startswith('Bearer realm="')
    decision = await decide(POLICY, _check(KEY.sign(claims(exp=1))))
    assert (decision.status, decision.reason) == (401, "expired")
    assert 'error="invalid_token"' in dict(decision.headers)["www-authenticate"]
    assert KEY.sign(claims(exp=1)).encode() not in decision.body
