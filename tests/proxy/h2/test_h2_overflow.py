"""At the connection cap the refusal speaks the client's protocol: an HTTP/2 client (the
preface in clear text) gets its first stream answered 503 (gRPC ``UNAVAILABLE``,
``overloaded``) and ``GOAWAY(NO_ERROR)`` naming that stream, a gRPC client fails at once
with ``UNAVAILABLE`` (no transparent-retry loop), an HTTP/1.1 client still gets its 503
``OM``; each refusal counts as an overflow."""

from __future__ import annotations

import asyncio
import time

import grpc
import h2.errors
import h2.events
import pytest

from tests.proxy.h2.conftest import RawH2
from tests.proxy.h2.test_h2_admission import _busy_h2, _http1_get
from tests.proxy.stats import metric
from wardgate.proxy.h2.settings import H2Settings

HTTP1 = H2Settings(upstream_protocol="http1")
FULL = "proxy: {maxConnections: 1}"


async def test_an_http2_client_at_a_full_listener_gets_503_and_goaway(upstream, gateway):
    gw = await gateway(upstream, FULL, http2=HTTP1)
    busy = await _busy_h2(gw.process.state.listen, 1)
    before = await metric(gw.admin_url, "wardgate_downstream_cx_overflow_total")
    try:
        client = await asyncio.to_thread(RawH2, gw.process.state.listen)
        client.request("/echo")
        events = await asyncio.to_thread(
            client.pump,
            5,
            lambda ev: any(isinstance(e, h2.events.ConnectionTerminated) for e in ev),
        )
        client.close()
    finally:
        busy.close()
    goaway = client.goaway()
    assert goaway is not None
    assert goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
    assert goaway.last_stream_id == 1  # later streams were not processed: retry them
    assert goaway.additional_data == b"overloaded"
    assert any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events)
    heads = [dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert heads == [{":status": "503", "grpc-status": "14", "grpc-message": "overloaded"}]
    assert any(isinstance(e, h2.events.StreamEnded) and e.stream_id == 1 for e in events)
    after = await metric(gw.admin_url, "wardgate_downstream_cx_overflow_total")
    assert after == before + 1


async def test_grpc_and_http1_clients_at_a_full_listener(upstream, gateway):
    gw = await gateway(upstream, FULL, http2=HTTP1)
    busy = await _busy_h2(gw.process.state.listen, 1)
    try:
        async with grpc.aio.insecure_channel(gw.process.state.listen) as channel:
            call = channel.unary_unary("/test.Echo/Unary")
            start = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await call(b"x", timeout=10)
            elapsed = time.monotonic() - start
        answer = await _http1_get(gw.process.state.listen)
    finally:
        busy.close()
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert failed.value.details() == "overloaded"  # our answer, read by the client
    assert elapsed < 8
    assert answer.startswith(b"HTTP/1.1 503 ")
    assert b"overloaded" in answer
