"""Real Envoy with Wardgate as its ext_authz service (gRPC and HTTP), in front of the demo
upstream: what the client gets and what the upstream receives."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import aiohttp
import pytest
from multidict import CIMultiDict

from wardgate.filters.api import FilterConfig, HttpFilter

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
    stack = await envoy_stack(example, POLICY, max_request_bytes=65536)

    async def chunks():
        for _ in range(20):
            yield b"b" * 8192

    status, _, body = await _request(stack.url + "/echo", method="POST", data=chunks())
    assert status == 413, body


@pytest.mark.parametrize("example", EXAMPLES)
async def test_wardgate_never_started_fails_closed_by_default(envoy_stack, example):
    stack = await envoy_stack(example, wardgate=False)
    status, _, _ = await _request(stack.url + "/echo")
    assert status == 403  # Envoy's status_on_error: the request never reached the upstream


@pytest.mark.parametrize("allow", [False, True], ids=["fail-closed", "failure-mode-allow"])
@pytest.mark.parametrize("example", [*EXAMPLES, "ext-proc.yaml"])
async def test_wardgate_stopped_gives_the_configured_failure_mode(envoy_stack, example, allow):
    stack = await envoy_stack(example, POLICY, failure_mode_allow=allow)
    status, _, body = await _request(stack.url + "/echo")
    assert status == 200, body
    assert "x-envoy-auth-failure-mode-allowed" not in _upstream_headers(json.loads(body))
    await stack.authz.stop()
    status, _, body = await _request(stack.url + "/echo", method="DELETE")
    if not allow:
        # ext_authz answers status_on_error (403), ext_proc a 500; never the upstream.
        assert status == (500 if example == "ext-proc.yaml" else 403)
        return
    # Let through, unchecked: the DELETE the policy refuses reaches the upstream, and the
    # ext_authz doors mark it (ext_proc has no such header: it skips the processor).
    assert status == 200, body
    seen = _upstream_headers(json.loads(body))
    if example != "ext-proc.yaml":
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


class _BodyRecorder(FilterConfig):
    name = "body_recorder"

    def __init__(self, limit: int) -> None:
        self.request_body_limit = limit
        self.seen: list[tuple[int, bool]] = []

    def create_filter(self) -> HttpFilter:
        seen = self.seen

        class _Filter(HttpFilter):
            async def decode_body(self, request, body, complete):
                seen.append((len(body), complete))
                return None

        return _Filter()


async def _with_recorder(stack, limit: int) -> _BodyRecorder:
    recorder = _BodyRecorder(limit)
    policy = stack.authz.holder.current
    stack.authz.holder.swap(
        dataclasses.replace(policy, filters=(*policy.filters, recorder), request_body_limit=limit)
    )
    return recorder


async def _post(url: str, total: int, chunked: bool) -> None:
    async def chunks():
        for _ in range(total // 4096):
            yield b"q" * 4096

    data = chunks() if chunked else b"q" * total
    status, _, body = await _request(url + "/echo", method="POST", data=data)
    assert status == 200, body
    assert json.loads(body)["bodyLength"] == total  # the upstream always gets it all


@pytest.mark.parametrize("example", [*EXAMPLES, "ext-proc.yaml"])
async def test_body_filters_see_the_whole_buffered_body_or_know_it_is_cut(envoy_stack, example):
    """Envoy buffering 65536 bytes: a filter reading less than that always learns a body
    was cut, chunked or not; a declared length tells it too."""
    stack = await envoy_stack(example, 'waf: {mode: "off"}', max_request_bytes=65536)
    recorder = await _with_recorder(stack, 65535)
    for total in (61440, 98304):
        await _post(stack.url, total, chunked=True)
    await _post(stack.url, 98304, chunked=False)
    assert recorder.seen == [(61440, True), (65535, False), (65535, False)]
    # A filter reading more than Envoy buffers: a declared length still tells it.
    recorder = await _with_recorder(stack, 1 << 20)
    await _post(stack.url, 98304, chunked=False)
    if example == "ext-proc.yaml":
        assert recorder.seen == [(98304, True)]  # BUFFERED: the whole body
    else:
        assert recorder.seen == [(65536, False)]


@pytest.mark.parametrize("example", [*EXAMPLES, "ext-proc.yaml"])
async def test_attacks_get_wardgate_403_with_rule_ids_and_never_reach_upstream(
    envoy_stack, example
):
    stack = await envoy_stack(example, "")  # the default policy: WAF on, enforcing
    status, _, body = await _request(stack.url + "/echo?id=1%27%20OR%20%271%27%3D%271")
    assert status == 403
    problem = json.loads(body)
    assert problem["filter"] == "waf" and problem["reason"] == "attack_detected"
    assert any(v["location"] == "query:id" for v in problem["violations"])
    status, _, body = await _request(
        stack.url + "/echo", method="POST", json={"text": "<script>alert(document.cookie)</script>"}
    )
    assert status == 403
    assert "alert(document" not in body.decode()  # the matched value is never echoed
    status, _, body = await _request(
        stack.url + "/echo", method="POST", json={"text": "Hello O'Brien, see https://example.com"}
    )
    assert status == 200
    assert json.loads(body)["method"] == "POST"  # the upstream's echo: it got the benign one
    if example == "ext-authz-grpc.yaml":
        line = await stack.envoy.access_log_line('"GET /echo?id=')
        metadata = json.loads(line.split("wardgate=", 1)[1])
        assert metadata["filter"] == "waf" and metadata["rule_ids"]
        assert all(rule.startswith("waf.") for rule in metadata["rule_ids"])
