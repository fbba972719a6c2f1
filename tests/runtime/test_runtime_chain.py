"""The filter chain contract: order, fail-closed, body buffering, generations."""

from __future__ import annotations

import dataclasses

import aiohttp

from wardgate.config import load_policy_text
from wardgate.filters.api import FilterConfig, HttpFilter, HttpRequest, LocalReply
from wardgate.runtime import PolicyHolder, RequestPipeline, compile_policy
from wardgate.runtime.explain import build_request, parse_request_description


class Exploding(FilterConfig):
    name = "exploding"

    class _F(HttpFilter):
        async def decode_headers(self, request: HttpRequest) -> LocalReply | None:
            raise RuntimeError("secret value in message")

    def create_filter(self) -> HttpFilter:
        return self._F()


class BodyRecorder(FilterConfig):
    """Asks for 10 bytes of body and refuses bodies that do not fit."""

    name = "recorder"
    request_body_limit = 10

    def __init__(self) -> None:
        self.seen: list[tuple[bytes, bool]] = []

    def create_filter(self) -> HttpFilter:
        outer = self

        class _F(HttpFilter):
            async def decode_body(self, request, body, complete):
                outer.seen.append((body, complete))
                return None if complete else LocalReply(413, "recorder", "too_big")

        return _F()


def _policy_with(*extra: FilterConfig):
    # No body-reading filter of its own (the default policy's WAF reads bodies too).
    base = compile_policy(load_policy_text("waf: {mode: off}"))
    filters = (*base.filters, *extra)
    limits = [f.request_body_limit for f in filters if f.request_body_limit is not None]
    return dataclasses.replace(
        base, filters=filters, request_body_limit=max(limits) if limits else None
    )


async def test_an_exception_in_a_filter_refuses_the_request():
    policy = _policy_with(Exploding())
    request = build_request(policy, parse_request_description(b"GET / HTTP/1.1\r\n\r\n"))
    reply = await RequestPipeline(policy, request).decode_headers()
    assert reply is not None
    assert (reply.status, reply.filter, reply.reason) == (500, "exploding", "filter_error")
    assert b"secret value" not in reply.render_body("id")


async def test_exception_refusal_over_http(upstream, gateway):
    gw = await gateway(upstream)
    gw.process.holder.swap(_policy_with(Exploding()))
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/echo") as resp:
            assert resp.status == 500
            assert (await resp.json(content_type=None))["reason"] == "filter_error"
        async with session.get(gw.admin_url + "/stats/prometheus") as resp:
            assert 'wardgate_filter_errors_total{filter="exploding"}' in await resp.text()


async def test_body_is_buffered_only_up_to_the_limit_and_forwarded_whole(upstream, gateway):
    gw = await gateway(upstream)
    recorder = BodyRecorder()
    gw.process.holder.swap(_policy_with(recorder))
    async with aiohttp.ClientSession() as session:
        async with session.post(gw.url + "/upload", data=b"0123456789") as resp:
            assert (await resp.json())["length"] == 10
        async with session.post(gw.url + "/upload", data=b"0123456789A") as resp:
            assert resp.status == 413
    assert recorder.seen == [(b"0123456789", True), (b"0123456789", False)]


def test_holder_swaps_generations_without_touching_the_old_object():
    first = compile_policy(load_policy_text(""))
    holder = PolicyHolder(first)
    second = holder.swap(compile_policy(load_policy_text("limits: {maxUrlBytes: 100}")))
    assert (first.generation, second.generation, holder.current) == (1, 2, second)
    assert first.spec.limits.max_url_bytes == 8192


def _pipeline(policy_text: str, *extra: FilterConfig) -> RequestPipeline:
    base = compile_policy(load_policy_text(policy_text))
    policy = dataclasses.replace(
        base, filters=(*base.filters, *extra), request_body_limit=10 if extra else None
    )
    request = build_request(policy, parse_request_description(b"POST / HTTP/1.1\r\n\r\n"))
    return RequestPipeline(policy, request)


class _Refuses(FilterConfig):
    """Refuses every request at the headers."""

    name = "refuses"

    class _F(HttpFilter):
        async def decode_headers(self, request: HttpRequest) -> LocalReply | None:
            return LocalReply(403, "refuses", "no")

    def create_filter(self) -> HttpFilter:
        return self._F()


async def test_the_sequence_is_headers_then_body_then_cap():
    recorder = BodyRecorder()
    # Headers first: a refusal there ends the request before any body phase.
    refused = _pipeline("waf: {mode: off}", _Refuses(), recorder)
    assert (await refused.decode_request(b"0123")).reason == "no"
    assert recorder.seen == []
    # The body phase sees at most its limit, complete only when that is all of it; the
    # cap comes after it, on every byte the adapter has.
    text = "waf: {mode: off}\nlimits: {maxRequestBodyBytes: 12}"
    assert await _pipeline(text, recorder).decode_request(b"0123456789") is None
    reply = await _pipeline(text, recorder).decode_request(b"0123456789AB", complete=False)
    assert reply is not None and reply.reason == "too_big"  # the body filter answered first
    assert recorder.seen == [(b"0123456789", True), (b"0123456789", False)]


async def test_no_body_still_runs_the_body_phase_and_the_cap_is_one_413():
    recorder = BodyRecorder()
    pipeline = _pipeline("waf: {mode: off}\nlimits: {maxRequestBodyBytes: 12}", recorder)
    assert await pipeline.decode_request(b"") is None
    assert recorder.seen == [(b"", True)]
    # Counted while streaming (no body filter in the way): the limits filter's own 413.
    assert pipeline.check_body_size(12) is None
    streamed = pipeline.check_body_size(13)
    assert streamed is not None
    policy = compile_policy(load_policy_text("waf: {mode: off}\nlimits: {maxRequestBodyBytes: 12}"))
    head = b"POST / HTTP/1.1\r\ncontent-length: 13\r\n\r\n"
    request = build_request(policy, parse_request_description(head))
    declared = await RequestPipeline(policy, request).decode_headers()  # the limits filter
    assert declared == streamed
    assert streamed.detail == "the request body is larger than 12 bytes"
