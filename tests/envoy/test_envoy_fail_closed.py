"""Wardgate never answers "allow" on an internal error: an exception inside a filter or
inside the adapter is a refusal Envoy passes on, even with ``failure_mode_allow: true``
(that setting covers Wardgate being unreachable, not Wardgate saying no)."""

from __future__ import annotations

import dataclasses
import json

import aiohttp
import pytest

from wardgate.filters.api import FilterConfig, HttpFilter, HttpRequest, LocalReply


class _RaisingFilter(HttpFilter):
    async def decode_headers(self, request: HttpRequest) -> LocalReply | None:
        raise RuntimeError("bug in a filter")


class _RaisingInFilter(FilterConfig):
    name = "boom"

    def create_filter(self) -> HttpFilter:
        return _RaisingFilter()


class _RaisingOnCreate(FilterConfig):
    name = "boom_create"

    def create_filter(self) -> HttpFilter:
        raise RuntimeError("bug outside the chain's guard")


@pytest.mark.parametrize("example", ["ext-authz-grpc.yaml", "ext-authz-http.yaml"])
@pytest.mark.parametrize("broken", [_RaisingInFilter, _RaisingOnCreate])
async def test_exception_is_a_refusal_even_with_failure_mode_allow(envoy_stack, example, broken):
    stack = await envoy_stack(example, "", failure_mode_allow=True)
    holder = stack.authz.holder
    policy = holder.current
    holder.swap(dataclasses.replace(policy, filters=(*policy.filters, broken())))
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.url + "/echo") as resp:
            # HTTP ext_authz: Envoy reads a 5xx as "service failed" (and would allow), so
            # Wardgate sends its 5xx refusals as 403; gRPC carries the 500 as is.
            assert resp.status == (500 if "grpc" in example else 403)
            problem = json.loads(await resp.read())
    assert problem["status"] == 500
    assert problem["reason"] in {"filter_error", "internal_error"}
    assert "bug" not in json.dumps(problem)  # the exception text never reaches the client
