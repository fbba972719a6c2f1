"""JWT behind Envoy: Wardgate's jwt_authn decides, Envoy enforces. Missing or invalid tokens
get Wardgate's 401; verified claims arrive upstream as headers and the token does not."""

from __future__ import annotations

import json

import aiohttp
import pytest
from multidict import CIMultiDict

from tests.filters.jwt_authn.helpers import claims, local_provider, policy, rsa_key

KEY = rsa_key()
POLICY = policy(
    {
        "corp": local_provider(
            KEY,
            claimToHeaders=[
                {"headerName": "x-user", "claimName": "sub"},
                {"headerName": "x-jwt-scope", "claimName": "scope"},
            ],
        )
    }
)
DOORS = ["ext-authz-grpc.yaml", "ext-authz-http.yaml", "ext-proc.yaml"]


async def _get(url: str, headers: dict[str, str]) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as resp:
            return resp.status, CIMultiDict(resp.headers), await resp.read()


@pytest.mark.parametrize("example", DOORS)
async def test_claims_reach_upstream_token_does_not_and_bad_tokens_get_401(envoy_stack, example):
    stack = await envoy_stack(example, POLICY)
    token = KEY.sign(claims(sub="alice", scope="orders:read"))
    status, _, body = await _get(
        stack.url + "/echo",
        {"authorization": f"Bearer {token}", "x-user": "mallory"},  # a forged claim header
    )
    assert status == 200, body
    seen: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        seen.setdefault(name.lower(), []).append(value)
    assert seen["x-jwt-scope"] == ["orders:read"]
    assert seen["x-user"] == ["alice"]  # the verified claim, not the forged one
    assert "authorization" not in seen  # forward: false

    for headers in ({}, {"authorization": "Bearer not.a.jwt"}):
        status, response_headers, body = await _get(stack.url + "/echo", headers)
        assert status == 401
        assert response_headers["www-authenticate"].startswith("Bearer")
        assert json.loads(body)["filter"] == "jwt_authn"


async def test_http_door_needs_claim_headers_allowed_and_validate_names_them(envoy_stack, tmp_path):
    """Envoy's HTTP ext_authz copies only the upstream headers its allowed_upstream_headers
    names, and applies headers-to-remove after them: a claim header left out of the list
    keeps the client's forged value. `wardgate validate` names every such header."""
    from tests.conftest import run_wardgate

    stack = await envoy_stack("ext-authz-http.yaml", POLICY, allowed_upstream_headers=None)
    token = KEY.sign(claims(sub="alice"))
    _, _, body = await _get(
        stack.url + "/echo", {"authorization": f"Bearer {token}", "x-user": "mallory"}
    )
    seen = {name.lower(): value for name, value in json.loads(body)["headers"]}
    assert seen["x-user"] == "mallory"  # the misconfiguration the note warns about
    path = tmp_path / "jwt.yaml"
    path.write_text(POLICY)
    result = run_wardgate("validate", str(path))
    (note,) = [line for line in result.stdout.splitlines() if "allowed_upstream_headers" in line]
    assert "x-user, x-jwt-scope" in note
