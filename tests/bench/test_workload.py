"""The full-policy benchmark measures what it says: the token is the stated size and
verifies, the JSON body is the stated size and valid for the bench API, and every policy of
the comparison lets both requests through (a refusal would be measured as speed)."""

from __future__ import annotations

import json

import pytest
from bench.harness.workload import (
    TOKEN_BYTES,
    full_policy,
    json_body,
    jwt_material,
    limits_policy,
    waf_policy,
)
from bench.memory_bench import growth_per_minute
from multidict import CIMultiDict

from wardgate.config import PolicySpec
from wardgate.filters.api import HttpRequest
from wardgate.runtime import RequestPipeline, compile_policy


@pytest.fixture(scope="module")
def material() -> tuple[str, str]:
    return jwt_material()


def test_the_token_and_body_have_the_stated_sizes(material):
    _jwks, token = material
    assert len(token) == TOKEN_BYTES
    assert token.count(".") == 2
    body = json_body(1024)
    assert len(body) == 1024
    assert json.loads(body)["quantity"] == 3


@pytest.mark.parametrize("name", ["limits", "waf", "full"])
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_every_bench_policy_passes_both_requests(material, name, method):
    jwks, token = material
    doc = {"limits": limits_policy(), "waf": waf_policy(), "full": full_policy(jwks)}[name]
    policy = compile_policy(PolicySpec.model_validate(doc))
    headers = CIMultiDict({"host": "127.0.0.1", "authorization": f"Bearer {token}"})
    if method == "POST":
        headers["content-type"] = "application/json"
    request = HttpRequest(method, "/bench?x=1", "/bench", "x=1", headers)
    body = json_body(1024) if method == "POST" else b""
    reply = await RequestPipeline(policy, request).decode_request(body)
    assert reply is None, reply


async def test_the_full_policy_refuses_a_request_without_the_token(material):
    jwks, _token = material
    policy = compile_policy(PolicySpec.model_validate(full_policy(jwks)))
    request = HttpRequest("GET", "/bench?x=1", "/bench", "x=1", CIMultiDict({"host": "h"}))
    reply = await RequestPipeline(policy, request).decode_headers()
    assert reply is not None and reply.status == 401


def test_memory_growth_is_a_slope_per_minute():
    flat = [(float(t), 100.0) for t in range(0, 60, 5)]
    assert growth_per_minute(flat) == 0.0
    growing = [(float(t), 100.0 + t / 60) for t in range(0, 120, 5)]
    assert growth_per_minute(growing) == pytest.approx(1.0)
