"""The client address filters see behind Envoy is the real downstream peer, not what a
client claims in ``x-forwarded-for`` or ``x-envoy-external-address``."""

from __future__ import annotations

import dataclasses

import aiohttp
import pytest

from wardgate.filters.api import FilterConfig, HttpFilter, HttpRequest, LocalReply


class _Recorder(HttpFilter):
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def decode_headers(self, request: HttpRequest) -> LocalReply | None:
        self.seen.append(request.client_address)
        return None


class _RecorderConfig(FilterConfig):
    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def create_filter(self) -> HttpFilter:
        return _Recorder(self.seen)


@pytest.mark.parametrize("example", ["ext-authz-grpc.yaml", "ext-authz-http.yaml", "ext-proc.yaml"])
async def test_forged_forwarding_headers_do_not_change_the_client_address(envoy_stack, example):
    stack = await envoy_stack(example, "")
    recorder = _RecorderConfig()
    policy = stack.authz.holder.current
    stack.authz.holder.swap(dataclasses.replace(policy, filters=(*policy.filters, recorder)))
    forged = {"x-forwarded-for": "198.51.100.7", "x-envoy-external-address": "198.51.100.8"}
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.url + "/echo", headers=forged) as resp:
            assert resp.status == 200
    assert recorder.seen == ["127.0.0.1"]
