"""One request sequence on every door: the same clean, attacking and oversized requests
through the native proxy (HTTP/1.1 with a declared length, HTTP/1.1 chunked, HTTP/2),
HTTP and gRPC ext_authz, ext_proc and ``wardgate explain`` get the same decision, and a
refusal the same status, filter, reason and words.

Each door is driven at its own wire (real sockets, grpcio, an ``h2`` client), without
Envoy in between: ``test_envoy_parity.py`` covers the same with Envoy in front."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import h2.events
import pytest

from tests.proxy.h2.conftest import RawH2
from wardgate.config import load_policy_text
from wardgate.envoy import ext_proc, grpc_authz, wire
from wardgate.proxy.h2.settings import H2Settings
from wardgate.runtime import compile_policy
from wardgate.runtime.explain import RequestDescription, explain

CAP = 1000
POLICY = f"limits: {{maxRequestBodyBytes: {CAP}}}\n"  # the WAF is on, enforcing
JSON = (("content-type", "application/json"),)


@dataclass(frozen=True)
class Probe:
    name: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


PROBES = [
    Probe("clean-get", "GET", "/echo?id=42"),
    Probe("clean-post", "POST", "/echo", JSON, b'{"name": "Hello O\'Brien"}'),
    Probe("attack-query", "GET", "/echo?id=1%27%20OR%20%271%27%3D%271"),
    Probe("attack-body", "POST", "/echo", JSON, b'{"text": "<script>alert(1)</script>"}'),
    Probe("oversized", "POST", "/echo", (("content-type", "text/plain"),), b"z" * (CAP + 500)),
]

Verdict = tuple[int, str, str, str, tuple[str, ...]]
"""``(status, filter, reason, detail, rule ids)``; :data:`ALLOWED` is an allowed request."""

ALLOWED: Verdict = (200, "", "", "", ())


def _verdict(status: int, body: bytes) -> Verdict:
    if status == 200:
        return ALLOWED
    problem = json.loads(body)
    assert problem["status"] == status
    rules = tuple(v["ruleId"] for v in problem.get("violations", ()))
    return status, problem["filter"], problem["reason"], problem["detail"], rules


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    """``body`` in 300-byte pieces: aiohttp sends it chunked, with no ``Content-Length``."""
    for i in range(0, len(body), 300):
        yield body[i : i + 300]


async def _native(url: str, probe: Probe, chunked: bool = False) -> Verdict:
    data: Any = probe.body or None
    if chunked and probe.body:
        data = _chunks(probe.body)
    async with aiohttp.ClientSession() as session:
        async with session.request(
            probe.method, url + probe.path, headers=dict(probe.headers), data=data
        ) as resp:
            if chunked and probe.body:
                assert "content-length" not in resp.request_info.headers
            return _verdict(resp.status, await resp.read())


def _http2(address: str, probe: Probe) -> Verdict:
    client = RawH2(address)
    try:
        extra = [*probe.headers]
        if probe.body:
            extra.append(("content-length", str(len(probe.body))))
        sid = client.request(probe.path, probe.method, end=not probe.body, extra=extra)
        if probe.body:
            client.conn.send_data(sid, probe.body, end_stream=True)
            client.flush()
        events = client.pump(
            until=30,
            stop=lambda evs: any(isinstance(e, h2.events.StreamEnded) for e in evs),
        )
        head = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
        status = int(dict(head.headers)[":status"])
        body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        return _verdict(status, body)
    finally:
        client.close()


async def _http_authz(address: str, probe: Probe) -> Verdict:
    """As Envoy's HTTP ext_authz sends a check with ``with_request_body``."""
    headers = dict(probe.headers)
    if probe.body:
        headers["x-envoy-auth-partial-body"] = "false"
    async with aiohttp.ClientSession() as session:
        async with session.request(
            probe.method, f"http://{address}{probe.path}", headers=headers, data=probe.body or None
        ) as resp:
            return _verdict(resp.status, await resp.read())


async def _grpc_authz(channel: grpc.aio.Channel, probe: Probe) -> Verdict:
    request = wire.CheckRequest()
    http = request.attributes.request.http
    http.method = probe.method
    http.path = probe.path
    http.host = "api.example.com"
    http.scheme = "http"
    http.protocol = "HTTP/1.1"
    http.size = len(probe.body) if probe.body else -1
    for name, value in probe.headers:
        http.headers[name] = value
    if probe.body:
        http.headers["content-length"] = str(len(probe.body))
        http.headers["x-envoy-auth-partial-body"] = "false"
        http.raw_body = probe.body
    call = channel.unary_unary(
        f"/{grpc_authz.SERVICE}/{grpc_authz.METHOD}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=wire.CheckResponse.FromString,
    )
    response = await call(request, timeout=30)
    if response.HasField("ok_response"):
        return ALLOWED
    denied = response.denied_response
    return _verdict(denied.status.code, denied.body.encode())


async def _ext_proc(channel: grpc.aio.Channel, probe: Probe) -> Verdict:
    """Envoy's ext_proc with ``request_body_mode: BUFFERED``: headers, then the body."""
    headers = wire.ProcessingRequest()
    fields = headers.request_headers.headers.headers
    for name, value in (
        (":method", probe.method),
        (":path", probe.path),
        (":authority", "api.example.com"),
        (":scheme", "http"),
        *probe.headers,
        *((("content-length", str(len(probe.body))),) if probe.body else ()),
    ):
        field = fields.add()
        field.key = name
        field.raw_value = value.encode()
    headers.request_headers.end_of_stream = not probe.body
    messages = [headers]
    if probe.body:
        body = wire.ProcessingRequest()
        body.request_body.body = probe.body
        body.request_body.end_of_stream = True
        messages.append(body)
    call = channel.stream_stream(
        f"/{ext_proc.SERVICE}/{ext_proc.METHOD}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=wire.ProcessingResponse.FromString,
    )
    stream = call(iter(messages), timeout=30)
    async for response in stream:
        if response.HasField("immediate_response"):
            immediate = response.immediate_response
            return _verdict(immediate.status.code, immediate.body)
    return ALLOWED


async def _explain(probe: Probe) -> Verdict:
    policy = compile_policy(load_policy_text(POLICY))
    result = await explain(
        policy, RequestDescription(probe.method, probe.path, probe.headers, probe.body)
    )
    if result["decision"] == "allow":
        return ALLOWED
    rules = tuple(v["ruleId"] for v in result["violations"])
    return result["status"], result["filter"], result["reason"], result["detail"], rules


async def test_every_door_gives_the_same_verdict_in_the_same_words(upstream, gateway, authz_server):
    native = await gateway(upstream, POLICY, http2=H2Settings(upstream_protocol="http1"))
    authz = await authz_server(POLICY)
    assert authz.grpc_address and authz.http_address
    address = native.url.removeprefix("http://")
    verdicts: dict[str, Verdict] = {}
    async with grpc.aio.insecure_channel(authz.grpc_address) as channel:
        for probe in PROBES:
            want = await _native(native.url, probe)
            verdicts[probe.name] = want
            doors = {
                "HTTP/1.1 chunked": await _native(native.url, probe, chunked=True),
                "HTTP/2": await asyncio.to_thread(_http2, address, probe),
                "HTTP ext_authz": await _http_authz(authz.http_address, probe),
                "gRPC ext_authz": await _grpc_authz(channel, probe),
                "ext_proc": await _ext_proc(channel, probe),
                "explain": await _explain(probe),
            }
            for door, verdict in doors.items():
                assert verdict == want, f"{door} differs from the native proxy on {probe.name}"
    assert verdicts["clean-get"] == verdicts["clean-post"] == ALLOWED
    assert verdicts["attack-query"][:2] == verdicts["attack-body"][:2] == (403, "waf")
    assert verdicts["oversized"] == (
        413,
        "limits",
        "body_too_large",
        f"the request body is larger than {CAP} bytes",
        ("limits.maxRequestBodyBytes",),
    )


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "chunked"])
async def test_the_413_is_the_same_whether_declared_or_counted(upstream, gateway, declared):
    """The limits filter refuses a declared ``Content-Length`` over the cap at the headers;
    the pipeline refuses a chunked body once its bytes pass the cap, on the prefix the
    body filters buffered and on the bytes streamed beyond it. One problem body."""
    policy = POLICY + 'waf: {mode: "off"}\n'  # no body buffering: the cap is met streaming
    gw = await gateway(upstream, policy)
    probe = PROBES[-1]
    async with aiohttp.ClientSession() as session:
        async with session.post(
            gw.url + "/echo", data=probe.body if declared else _chunks(probe.body)
        ) as resp:
            problem = json.loads(await resp.read())
    assert resp.status == 413
    assert problem["detail"] == f"the request body is larger than {CAP} bytes"
    assert problem["violations"] == [
        {
            "ruleId": "limits.maxRequestBodyBytes",
            "location": "body",
            "message": f"the request body is larger than {CAP} bytes",
        }
    ]
    record = gw.access_records()[-1]
    assert record["wardgate"]["reason"] == "body_too_large"
