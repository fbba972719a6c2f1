"""Real Envoy with Wardgate as its ext_authz service (gRPC and HTTP), in front of the demo
upstream: what the client gets and what the upstream receives."""

from __future__ import annotations

import hashlib
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


@pytest.mark.parametrize("example", EXAMPLES)
async def test_body_reaches_upstream_unchanged_and_declared_oversize_is_413(envoy_stack, example):
    stack = await envoy_stack(example, POLICY)
    payload = bytes(range(256)) * 8  # 2 KiB, binary
    status, _, body = await _request(stack.url + "/echo", method="POST", data=payload)
    assert status == 200, body
    echo = json.loads(body)
    assert echo["bodyLength"] == len(payload)
    assert echo["bodySha256"] == hashlib.sha256(payload).hexdigest()
    status, _, body = await _request(stack.url + "/echo", method="POST", data=b"a" * 5000)
    assert status == 413
    assert json.loads(body)["reason"] == "body_too_large"


@pytest.mark.parametrize("example", EXAMPLES)
async def test_body_over_envoy_buffer_and_over_policy_cap_is_413(envoy_stack, example):
    """Envoy buffers 65536 bytes and marks the body partial; the prefix alone is already
    over the policy's 4096-byte cap, so Wardgate refuses whatever the framing said."""
    stack = await envoy_stack(example, POLICY)

    async def chunks():
        for _ in range(20):
            yield b"b" * 8192

    status, _, body = await _request(stack.url + "/echo", method="POST", data=chunks())
    assert status == 413, body


@pytest.mark.parametrize("example", EXAMPLES)
async def test_wardgate_down_fails_closed_by_default(envoy_stack, example):
    stack = await envoy_stack(example, wardgate=False)
    status, _, _ = await _request(stack.url + "/echo")
    assert status == 403  # Envoy's status_on_error: the request never reached the upstream


@pytest.mark.parametrize("example", EXAMPLES)
async def test_wardgate_down_with_failure_mode_allow_lets_through_marked(envoy_stack, example):
    stack = await envoy_stack(example, wardgate=False, failure_mode_allow=True)
    status, _, body = await _request(stack.url + "/echo")
    assert status == 200
    seen = _upstream_headers(json.loads(body))
    assert seen["x-envoy-auth-failure-mode-allowed"] == ["true"]


async def test_grpc_decision_reaches_envoy_access_log_as_dynamic_metadata(envoy_stack):
    stack = await envoy_stack("ext-authz-grpc.yaml", POLICY)
    await _request(stack.url + "/echo", method="DELETE")
    await _request(stack.url + "/echo?allowed")
    denied = await stack.envoy.access_log_line('"DELETE /echo ')
    assert " 405 UAEX " in denied
    metadata = json.loads(denied.split("wardgate=", 1)[1])
    assert metadata["request_id"] in denied.split("wardgate=", 1)[0]  # Envoy's x-request-id
    assert metadata["decision"] == "deny"
    assert metadata["filter"] == "limits"
    assert metadata["reason"] == "method_not_allowed"
    assert metadata["rule_ids"] == ["limits.allowedMethods"]
    assert metadata["policy_digest"]
    allowed = await stack.envoy.access_log_line('"GET /echo?allowed ')
    assert json.loads(allowed.split("wardgate=", 1)[1])["decision"] == "allow"
