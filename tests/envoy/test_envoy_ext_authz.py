"""Real Envoy with Wardgate as its ext_authz service (gRPC and HTTP), in front of the demo
upstream: what the client gets and what the upstream receives."""

from __future__ import annotations

import json

import aiohttp
import pytest
from multidict import CIMultiDict

POLICY = """
limits:
  maxUrlBytes: 512
  maxRequestBodyBytes: 4096
  allowedMethods: [GET, POST]
headers:
  request:
    add:
      - name: x-wardgate-policy
        value: envoy-example
    remove: [x-debug]
  response:
    add:
      - name: x-content-type-options
        value: nosniff
"""

EXAMPLES = ["ext-authz-grpc.yaml", "ext-authz-http.yaml"]


def _upstream_headers(echo: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def _request(
    url: str, method: str = "GET", **kwargs: object
) -> tuple[int, CIMultiDict[str], bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, **kwargs) as resp:  # type: ignore[arg-type]
            return resp.status, CIMultiDict(resp.headers), await resp.read()


@pytest.mark.parametrize("example", EXAMPLES)
async def test_allowed_request_reaches_upstream_with_policy_header_changes(envoy_stack, example):
    stack = await envoy_stack(example, POLICY)
    status, _, body = await _request(
        stack.url + "/echo?q=1", headers={"x-debug": "secret-debug", "x-keep": "yes"}
    )
    assert status == 200, body
    seen = _upstream_headers(json.loads(body))
    assert seen["x-wardgate-policy"] == ["envoy-example"]  # added by the policy
    assert "x-debug" not in seen  # removed by the policy
    assert seen["x-keep"] == ["yes"]  # everything else untouched


@pytest.mark.parametrize("example", EXAMPLES)
async def test_refusal_carries_wardgate_status_headers_and_problem_body(envoy_stack, example):
    stack = await envoy_stack(example, POLICY)
    status, headers, body = await _request(stack.url + "/echo", method="DELETE")
    assert status == 405
    assert headers["allow"] == "GET, POST"
    assert headers["content-type"].startswith("application/problem+json")
    assert headers["x-content-type-options"] == "nosniff"  # response policy on refusals
    problem = json.loads(body)
    assert problem["reason"] == "method_not_allowed"
    assert problem["filter"] == "limits"
    assert problem["status"] == 405


@pytest.mark.parametrize("example", EXAMPLES)
async def test_url_too_long_is_414(envoy_stack, example):
    stack = await envoy_stack(example, POLICY)
    status, _, body = await _request(stack.url + "/echo?q=" + "x" * 600)
    assert status == 414
    assert json.loads(body)["reason"] == "url_too_long"
