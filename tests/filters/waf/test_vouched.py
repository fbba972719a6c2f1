"""Values the gateway vouches for (``HttpRequest.vouched``) are not scanned by the WAF: the
exact bearer header whose token the JWT filter verified, and the ``x-request-id`` the
gateway generated. Anything else, including the same token with text around it, is."""

from __future__ import annotations

import yaml
from multidict import CIMultiDict

from tests.filters.jwt_authn.helpers import claims, compiled, local_provider, rsa_key, send
from wardgate.config.proxy import ProxySpec
from wardgate.filters.waf.filter import request_targets
from wardgate.runtime.forwarding import settle_request_id

KEY = rsa_key("k")
ATTACK = "' OR '1'='1' UNION SELECT password FROM users --"


def _policy() -> str:
    return yaml.safe_dump(
        {
            "jwt": {
                "providers": {"idp": {**local_provider(KEY), "forward": True}},
                "rules": [{"match": {"prefix": "/"}, "requires": {"providerName": "idp"}}],
            }
        }
    )


def _header_targets(request) -> set[str]:
    return {t.name for t in request_targets(request) if t.kind == "REQUEST_HEADERS"}


async def test_the_verified_bearer_header_is_vouched_and_not_a_waf_target():
    pol = compiled(_policy())
    assert "waf" in pol.filter_names()
    token = KEY.sign(claims())
    out = await send(pol, token=token)
    assert out.status == 200, out.reply
    assert ("authorization", f"Bearer {token}") in out.request.vouched
    assert "authorization" not in _header_targets(out.request)
    assert "host" in _header_targets(out.request)


async def test_the_same_token_elsewhere_or_with_text_around_it_is_still_scanned():
    pol = compiled(_policy())
    token = KEY.sign(claims())
    out = await send(pol, token=token, headers={"x-token": f"{token}{ATTACK}"})
    assert (out.status, out.reply.filter) == (403, "waf")
    # Extra spaces after the scheme: the token verifies, but the value is not exactly
    # prefix + token, so it is not vouched for and the WAF scans it.
    spaced = await send(pol, headers={"authorization": f"Bearer  {token}"})
    assert spaced.status == 200, spaced.reply
    assert spaced.request.vouched == frozenset()
    assert "authorization" in _header_targets(spaced.request)


async def test_nothing_is_vouched_for_without_a_verified_token():
    pol = compiled(_policy())
    out = await send(pol, token=KEY.sign(claims(aud="someone-else")))
    assert out.reply is not None and out.reply.filter == "jwt_authn"
    assert out.request.vouched == frozenset()


def test_only_a_generated_request_id_is_vouched_for():
    spec = ProxySpec()
    headers: CIMultiDict[str] = CIMultiDict({"x-request-id": ATTACK.replace(" ", "_")})
    kept = settle_request_id(headers, spec)
    assert not kept.generated
    assert kept.vouched == frozenset()
    fresh = settle_request_id(CIMultiDict(), spec)
    assert fresh.generated
    assert fresh.vouched == {("x-request-id", fresh.value)}
