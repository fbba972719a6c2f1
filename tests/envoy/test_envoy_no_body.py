"""Envoy without ``with_request_body``: the check carries no body. Filters that need the
body get an empty, incomplete prefix (their rule for uninspected bodies applies); checks
that need no body decide as usual, and the body still reaches the upstream."""

from __future__ import annotations

import hashlib
import json

import aiohttp
import pytest

POLICY = 'limits: {maxRequestBodyBytes: 4096}\nwaf: {mode: "off"}\n'


@pytest.mark.parametrize("example", ["ext-authz-grpc.yaml", "ext-authz-http.yaml"])
async def test_body_not_sent_to_wardgate_still_reaches_upstream(envoy_stack, example):
    stack = await envoy_stack(example, POLICY, with_request_body=None)
    payload = b"p" * 3000
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.url + "/echo", data=payload) as resp:
            assert resp.status == 200
            echo = json.loads(await resp.read())
        assert echo["bodySha256"] == hashlib.sha256(payload).hexdigest()
        async with session.post(stack.url + "/echo", data=b"p" * 5000) as resp:
            if "grpc" in example:
                assert resp.status == 413  # the declared length is still checked
            else:
                # HTTP ext_authz without with_request_body sends no Content-Length, so the
                # declared size cannot be checked: a documented limitation (see
                # envoy_limitations), not a silent one.
                assert resp.status == 200


async def test_body_filter_without_the_body_fails_closed_over_grpc(envoy_stack):
    """The WAF (on by default) reads bodies: without with_request_body it sees an empty,
    incomplete body and applies its oversize rule (reject), rather than passing a body it
    never inspected."""
    stack = await envoy_stack("ext-authz-grpc.yaml", "", with_request_body=None)
    async with aiohttp.ClientSession() as session:
        async with session.post(stack.url + "/echo", data=b"harmless") as resp:
            assert resp.status == 413
            problem = json.loads(await resp.read())
        async with session.get(stack.url + "/echo") as resp:
            assert resp.status == 200  # no body, nothing left uninspected
    assert problem["filter"] == "waf"


async def test_http_door_cannot_see_a_body_it_was_not_sent_and_validate_says_so(
    envoy_stack, tmp_path
):
    """Over HTTP ext_authz without with_request_body Envoy sends neither the body nor its
    length: the attack in the body passes. A protocol limit, reported for the policy."""
    from tests.conftest import run_wardgate

    stack = await envoy_stack("ext-authz-http.yaml", "", with_request_body=None)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            stack.url + "/echo", json={"text": "<script>alert(1)</script>"}
        ) as resp:
            assert resp.status == 200
    policy = tmp_path / "default.yaml"
    policy.write_text("")
    notes = run_wardgate("validate", str(policy)).stdout
    assert "without with_request_body Envoy sends neither the body nor its length" in notes
