"""The cheap checks on the per-request JWT path: which token texts count as a compact JWT
(``in_jwt_alphabet``: only those may be vouched for to the WAF, so anything outside
base64url and ``.`` must be refused), and query parameters parsed only when a token
parameter can be in them (without losing a token in a percent-encoded name, nor one that
another provider reads from a parameter of another name)."""

from __future__ import annotations

import pytest

from tests.filters.jwt_authn.helpers import (
    claims,
    compiled,
    local_provider,
    policy,
    rsa_key,
    send,
)
from wardgate.filters.jwt_authn.extract import in_jwt_alphabet


@pytest.mark.parametrize(
    "token",
    ["eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln-_x", "abc", "...", "-_.", "A1", ""],
)
def test_base64url_and_dots_are_the_jwt_alphabet(token: str) -> None:
    assert in_jwt_alphabet(token)


@pytest.mark.parametrize(
    "token",
    [
        "eyJ.eyJ.sig=",  # padding is not base64url in a JWT
        "eyJ.eyJ.s+g/",  # base64 (not url) characters
        "eyJ.eyJ.sig ",  # a space
        "eyJ.eyJ.sig'--",
        "eyJ.eyJ.sïg",  # a non-ASCII letter (str.isalnum would say yes)
        "eyJ.eyJ.sig\x00",
        "١٢٣",  # Arabic-Indic digits: digits to str.isalnum, not ASCII
    ],
)
def test_anything_else_is_not(token: str) -> None:
    assert not in_jwt_alphabet(token)


RSA = rsa_key("rsa-alphabet")


async def test_a_token_in_a_percent_encoded_parameter_name_is_found() -> None:
    pol = compiled(policy({"idp": local_provider(RSA)}))
    out = await send(pol, target=f"/orders?x=1&access%5Ftoken={RSA.sign(claims())}")
    assert out.status == 200, out.reason
    assert (await send(pol, target="/orders?x=1&access_tokens=abc")).status == 401


async def test_providers_reading_different_parameters_each_find_theirs() -> None:
    first = {**local_provider(RSA), "fromParams": ["first"]}
    second = {**local_provider(RSA), "fromParams": ["second"]}
    rules = [
        {
            "match": {"prefix": "/"},
            "requires": {
                "requiresAny": {"requirements": [{"providerName": "one"}, {"providerName": "two"}]}
            },
        }
    ]
    pol = compiled(policy({"one": first, "two": second}, rules=rules))
    assert (await send(pol, target=f"/orders?second={RSA.sign(claims())}")).status == 200
    assert (await send(pol, target=f"/orders?first={RSA.sign(claims())}")).status == 200
    assert (await send(pol, target=f"/orders?third={RSA.sign(claims())}")).status == 401
