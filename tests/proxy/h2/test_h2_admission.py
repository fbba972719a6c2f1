"""HTTP/2 under the listener's admission and time limits, like HTTP/1.1: an HTTP/2
connection counts once against ``proxy.maxConnections`` however many streams it carries, an
HTTP/2 connection without streams is idle (closed to make room at the cap), a request head
left unfinished is cut at ``proxy.timeouts.requestHeaders``, and a stalled body gets the
same 408 as on HTTP/1.1. Driven with the ``h2`` library over real sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import grpc
import h2.errors
import h2.events
import hpack
import hyperframe.frame
import pytest

from tests.proxy.h2.conftest import RawH2
from tests.proxy.stats import metric
from wardgate.proxy.h2.settings import H2Settings

ERR = h2.errors.ErrorCodes
HTTP1 = H2Settings(upstream_protocol="http1")
FAST_HEADERS = "proxy: {timeouts: {requestHeaders: 500ms}}"


async def _http1_get(address: str, path: str = "/echo") -> bytes:
    """One HTTP/1.1 request on a new connection; everything the gateway sends back until
    it closes (``Connection: close``)."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
    data = b""
    try:
        async with asyncio.timeout(5):
            while chunk := await reader.read(65536):
                data += chunk
    finally:
        writer.close()
    return data


async def _busy_h2(address: str, streams: int) -> RawH2:
    """An HTTP/2 connection with ``streams`` requests in flight (the upstream holds them)."""
    client = await asyncio.to_thread(RawH2, address)
    for _ in range(streams):
        client.request("/delay/3")
    await asyncio.sleep(0.2)
    return client


async def _finished_h2(address: str) -> RawH2:
    """An HTTP/2 connection that was answered once and now carries no stream."""
    client = await asyncio.to_thread(RawH2, address)
    client.request("/echo")
    await asyncio.to_thread(
        client.pump, 5, lambda ev: any(isinstance(e, h2.events.StreamEnded) for e in ev)
    )
    return client


async def test_an_http2_connection_counts_once_against_the_cap(upstream, gateway):
    """Cap 2: one HTTP/2 connection with five streams in flight and one HTTP/1.1 request
    fit; with a second busy HTTP/2 connection the next client gets the overload 503."""
    gw = await gateway(upstream, "proxy: {maxConnections: 2}", http2=HTTP1)
    address = gw.process.state.listen
    before = await metric(gw.admin_url, "wardgate_downstream_cx_overflow_total")
    active = await metric(gw.admin_url, "wardgate_downstream_cx_active")
    first = await _busy_h2(address, 5)
    try:
        assert await metric(gw.admin_url, "wardgate_downstream_cx_active") == active + 1
        assert (await _http1_get(address)).startswith(b"HTTP/1.1 200 ")
        second = await _busy_h2(address, 1)
        try:
            refused = await _http1_get(address)
        finally:
            second.close()
    finally:
        first.close()
    assert refused.startswith(b"HTTP/1.1 503 "), refused
    assert b'"reason":"overloaded"' in refused
    assert await metric(gw.admin_url, "wardgate_downstream_cx_overflow_total") == before + 1


async def test_connections_that_have_not_shown_their_protocol_count(upstream, gateway):
    """A connection that sent half a preface (or nothing) holds a descriptor: it counts."""
    gw = await gateway(upstream, "proxy: {maxConnections: 2}", http2=HTTP1)
    address = gw.process.state.listen
    host, _, port = address.rpartition(":")
    silent = socket.create_connection((host, int(port)))
    half = socket.create_connection((host, int(port)))
    half.sendall(b"PRI * HTTP/2")
    await asyncio.sleep(0.2)
    try:
        refused = await _http1_get(address)
    finally:
        silent.close()
        half.close()
    assert refused.startswith(b"HTTP/1.1 503 "), refused
    await asyncio.sleep(0.2)
    assert (await _http1_get(address)).startswith(b"HTTP/1.1 200 ")  # slots free again


async def test_at_the_cap_an_http2_connection_without_streams_makes_room(upstream, gateway):
    """Idle HTTP/2 connections must not lock new clients out: at the cap one is closed
    gracefully (GOAWAY NO_ERROR) and the new client is served; a busy one is never
    chosen."""
    gw = await gateway(upstream, "proxy: {maxConnections: 2}", http2=HTTP1)
    address = gw.process.state.listen
    before = await metric(gw.admin_url, "wardgate_downstream_cx_idle_closed_total")
    busy = await _busy_h2(address, 1)
    idle = await _finished_h2(address)
    try:
        assert (await _http1_get(address)).startswith(b"HTTP/1.1 200 ")
        await asyncio.to_thread(idle.pump, 3)
        goaway = idle.goaway()
        assert goaway is not None and goaway.error_code == ERR.NO_ERROR
        assert idle.closed
        assert await metric(gw.admin_url, "wardgate_downstream_cx_idle_closed_total") == before + 1
        events = await asyncio.to_thread(
            busy.pump, 6, lambda ev: any(isinstance(e, h2.events.StreamEnded) for e in ev)
        )
        heads = [dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived)]
        assert heads and heads[0][":status"] == "200"  # the busy one was left alone
    finally:
        busy.close()
        idle.close()


async def test_at_the_cap_the_longest_idle_http2_connection_goes_first(upstream, gateway):
    gw = await gateway(upstream, "proxy: {maxConnections: 2}", http2=HTTP1)
    address = gw.process.state.listen
    older = await _finished_h2(address)
    await asyncio.sleep(0.1)
    newer = await _finished_h2(address)
    try:
        assert (await _http1_get(address)).startswith(b"HTTP/1.1 200 ")
        await asyncio.to_thread(older.pump, 3)
        await asyncio.to_thread(newer.pump, 0.5)
        assert older.goaway() is not None and older.closed
        assert newer.goaway() is None and not newer.closed
    finally:
        older.close()
        newer.close()


def _open_header_block(stream_id: int) -> bytes:
    """A HEADERS frame of a valid request without END_HEADERS: the head is unfinished."""
    block = hpack.Encoder().encode(
        [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/echo")]
    )
    frame = hyperframe.frame.HeadersFrame(stream_id, block)
    frame.flags.add("END_STREAM")
    return frame.serialize()


async def test_an_unfinished_http2_request_head_closes_the_connection(upstream, gateway):
    """HEADERS without its CONTINUATION: after requestHeaders the connection is closed
    with GOAWAY(NO_ERROR) naming the last stream accepted (so the client knows the stalled
    request was never processed), counted as a request-header timeout."""
    gw = await gateway(upstream, FAST_HEADERS, http2=HTTP1)
    before = await metric(
        gw.admin_url, "wardgate_downstream_timeouts_total", 'kind="request_headers"'
    )
    client = await _finished_h2(gw.process.state.listen)  # stream 1 answered
    start = time.monotonic()
    await asyncio.to_thread(client.send_raw, _open_header_block(3))
    await asyncio.to_thread(client.pump, 5)
    client.close()
    elapsed = time.monotonic() - start
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == ERR.NO_ERROR
    assert goaway.last_stream_id == 1
    assert client.closed
    assert 0.4 < elapsed < 4
    after = await metric(
        gw.admin_url, "wardgate_downstream_timeouts_total", 'kind="request_headers"'
    )
    assert after == before + 1


async def test_a_trickled_http2_headers_frame_is_cut(upstream, gateway):
    """The frame itself sent a byte at a time: the head is still unfinished after the
    timeout, so the connection is closed; nothing reached the upstream as a request."""
    gw = await gateway(upstream, FAST_HEADERS, http2=HTTP1)
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    frame = _open_header_block(1)

    async def trickle() -> None:
        for byte in frame:
            await asyncio.sleep(0.1)
            await asyncio.to_thread(client.send_raw, bytes([byte]))

    task = asyncio.create_task(trickle())
    try:
        await asyncio.to_thread(client.pump, 5)
    finally:
        task.cancel()
        client.close()
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == ERR.NO_ERROR
    assert goaway.last_stream_id == 0
    assert not any(isinstance(e, h2.events.ResponseReceived) for e in client.events)


async def test_an_idle_http2_connection_outlives_the_header_timeout(upstream, gateway):
    """A connection between requests is idle, not slow: it is still served after a pause
    longer than requestHeaders (gRPC channels keep connections open between calls)."""
    gw = await gateway(upstream, FAST_HEADERS, http2=HTTP1)
    client = await _finished_h2(gw.process.state.listen)
    await asyncio.sleep(1.0)
    client.request("/echo")
    events = await asyncio.to_thread(
        client.pump,
        5,
        lambda ev: sum(isinstance(e, h2.events.StreamEnded) for e in ev) >= 2,
    )
    client.close()
    statuses = [
        dict(e.headers)[":status"] for e in events if isinstance(e, h2.events.ResponseReceived)
    ]
    assert statuses == ["200", "200"]
    assert client.goaway() is None


async def test_a_stalled_http2_body_gets_408_on_its_stream(recording_upstream, gateway):
    """The body clock of HTTP/1.1 (requestBody plus minRequestBodyRate) on an HTTP/2
    stream: a body that stops is answered 408 on that stream; the connection lives on."""
    url, seen = recording_upstream
    gw = await gateway(
        url, "proxy: {timeouts: {requestBody: 500ms}, minRequestBodyRate: 1000}", http2=HTTP1
    )
    before = await metric(gw.admin_url, "wardgate_downstream_timeouts_total", 'kind="request_body"')
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    sid = client.request(
        "/upload", method="POST", end=False, extra=[("content-type", "text/plain")]
    )
    client.conn.send_data(sid, b"0123456789")
    client.flush()
    start = time.monotonic()
    events = await asyncio.to_thread(
        client.pump, 6, lambda ev: any(isinstance(e, h2.events.StreamEnded) for e in ev)
    )
    heads = [dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived)]
    body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert heads and heads[0][":status"] == "408", heads
    assert json.loads(body)["reason"] == "request_body_timeout"
    assert time.monotonic() - start < 4
    assert client.goaway() is None
    client.request("/echo")  # the connection still serves
    events = await asyncio.to_thread(
        client.pump,
        5,
        lambda ev: sum(isinstance(e, h2.events.StreamEnded) for e in ev) >= 2,
    )
    client.close()
    statuses = [
        dict(e.headers)[":status"] for e in events if isinstance(e, h2.events.ResponseReceived)
    ]
    assert statuses[-1] == "200"
    after = await metric(gw.admin_url, "wardgate_downstream_timeouts_total", 'kind="request_body"')
    assert after == before + 1
    assert all(path != "/upload" for _, path, _ in seen)


async def test_a_grpc_client_at_a_full_listener_fails_fast_with_unavailable(upstream, gateway):
    """At the cap a gRPC client gets a clear UNAVAILABLE (it may retry elsewhere), not a
    hang until its deadline: the overload answer closes the connection at once."""
    gw = await gateway(upstream, "proxy: {maxConnections: 1}", http2=HTTP1)
    busy = await _busy_h2(gw.process.state.listen, 1)
    try:
        async with grpc.aio.insecure_channel(gw.process.state.listen) as channel:
            call = channel.unary_unary("/test.Echo/Unary")
            start = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call(b"x", timeout=10)
    finally:
        busy.close()
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - start < 8
