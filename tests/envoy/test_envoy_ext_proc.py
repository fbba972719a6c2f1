"""Real Envoy with Wardgate as its ext_proc service: request headers, buffered request body,
response headers and buffered response body through the same policy; blocks are immediate
responses."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import aiohttp
from multidict import CIMultiDict

from wardgate.filters.api import (
    FilterConfig,
    HttpFilter,
    HttpRequest,
    HttpResponse,
    LocalReply,
)

EXAMPLE = "ext-proc.yaml"
POLICY = """
limits:
  maxRequestBodyBytes: 4096
  allowedMethods: [GET, POST]
headers:
  request:
    add: [{name: x-wardgate-policy, value: ext-proc}]
    remove: [x-debug]
  response:
    add: [{name: x-content-type-options, value: nosniff}]
    remove: [x-powered-by]
"""


async def _request(url: str, method: str = "GET", **kwargs: object):
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, **kwargs) as resp:  # type: ignore[arg-type]
            return resp.status, CIMultiDict(resp.headers), await resp.read()


def _upstream_headers(body: bytes) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in json.loads(body)["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def test_request_and_response_header_policy_apply_to_upstream_traffic(envoy_stack):
    stack = await envoy_stack(EXAMPLE, POLICY)
    status, headers, body = await _request(
        stack.url + "/echo", headers={"x-debug": "1", "x-keep": "k"}
    )
    assert status == 200, body
    seen = _upstream_headers(body)
    assert seen["x-wardgate-policy"] == ["ext-proc"]
    assert "x-debug" not in seen
    assert seen["x-keep"] == ["k"]
    # Unlike ext_authz, the response policy reaches the upstream's response.
    assert headers["x-content-type-options"] == "nosniff"


async def test_refusal_is_an_immediate_response_with_wardgate_body(envoy_stack):
    stack = await envoy_stack(EXAMPLE, POLICY)
    status, headers, body = await _request(stack.url + "/echo", method="DELETE")
    assert status == 405
    assert headers["allow"] == "GET, POST"
    assert headers["x-content-type-options"] == "nosniff"
    assert json.loads(body)["reason"] == "method_not_allowed"
    line = await stack.envoy.access_log_line('"DELETE /echo ')
    assert json.loads(line.split("wardgate=", 1)[1])["reason"] == "method_not_allowed"


async def test_buffered_body_reaches_upstream_unchanged_and_over_cap_is_413(envoy_stack):
    stack = await envoy_stack(EXAMPLE, POLICY)
    payload = bytes(range(256)) * 12
    status, _, body = await _request(stack.url + "/echo", method="POST", data=payload)
    assert status == 200, body
    assert json.loads(body)["bodySha256"] == hashlib.sha256(payload).hexdigest()

    async def chunks():
        for _ in range(3):
            yield b"c" * 2000

    status, _, body = await _request(stack.url + "/echo", method="POST", data=chunks())
    assert status == 413, body
    assert json.loads(body)["reason"] == "body_too_large"


class _MaskErrors(HttpFilter):
    """Response-side checks like the WAF's: refuse upstream 5xx, scrub a leaked marker."""

    def encode_headers(self, request: HttpRequest, response: HttpResponse) -> LocalReply | None:
        if response.status >= 500 and not response.local:
            return LocalReply(502, "mask", "upstream_error_masked")
        return None

    def encode_body(self, request, response, body: bytes, complete: bool) -> LocalReply | None:
        if b"bodyLength" in body:
            response.body = body.replace(b"bodyLength", b"REDACTED__")
        return None


class _MaskConfig(FilterConfig):
    name = "mask"
    response_body_limit = 65536

    def create_filter(self) -> HttpFilter:
        return _MaskErrors()


async def test_response_phase_refuses_and_rewrites_upstream_responses(envoy_stack):
    stack = await envoy_stack(EXAMPLE, POLICY)
    holder = stack.authz.holder
    policy = holder.current
    holder.swap(
        dataclasses.replace(
            policy, filters=(_MaskConfig(), *policy.filters), response_body_limit=65536
        )
    )
    status, _, body = await _request(stack.url + "/status/500")
    assert status == 502
    assert json.loads(body)["reason"] == "upstream_error_masked"
    status, _, body = await _request(stack.url + "/echo")
    assert status == 200
    assert b"REDACTED__" in body and b"bodyLength" not in body


class _Raising(HttpFilter):
    def encode_headers(self, request, response):
        raise RuntimeError("bug")


class _RaisingConfig(FilterConfig):
    name = "raising"

    def create_filter(self) -> HttpFilter:
        return _Raising()


async def test_exception_in_a_response_phase_is_a_500_refusal(envoy_stack):
    stack = await envoy_stack(EXAMPLE, "")
    holder = stack.authz.holder
    policy = holder.current
    holder.swap(dataclasses.replace(policy, filters=(*policy.filters, _RaisingConfig())))
    status, _, body = await _request(stack.url + "/echo")
    assert status == 500
    assert b"bug" not in body


async def test_wardgate_down_refuses(envoy_stack):
    stack = await envoy_stack(EXAMPLE, wardgate=False)
    status, _, _ = await _request(stack.url + "/echo")
    assert status == 500
