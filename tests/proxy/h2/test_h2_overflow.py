"""At the connection cap the refusal speaks the client's protocol: an HTTP/2 client (the
preface in clear text) gets its first stream answered 503 (gRPC ``UNAVAILABLE``,
``overloaded``) and ``GOAWAY(NO_ERROR)`` naming that stream, a gRPC client fails at once
with ``UNAVAILABLE`` (no transparent-retry loop), an HTTP/1.1 client still gets its 503
``OM``; each refusal counts as an overflow."""

from __future__ import annotations

import asyncio
import contextlib
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


@pytest.mark.parametrize("flood", [False, True], ids=["one", "flood"])
async def test_over_tls_alpn_decides_the_refusal(tmp_path, monkeypatch, flood):
    """On a TLS listener the refusal follows ALPN: ``h2`` gets the HTTP/2 answer at once
    (no preface needed), ``http/1.1`` the 503 bytes. In a flood of refusals (the lingering
    budget spent) an HTTP/2 client gets ``GOAWAY`` at once, no wait for its stream."""
    import socket
    import ssl

    import h2.config
    import h2.connection

    from tests.proxy.h2.test_h2_lifecycle import _self_signed
    from wardgate.proxy.h2.detect import ALPN_PROTOCOLS
    from wardgate.proxy.h2.overflow import OverflowSelector
    from wardgate.proxy.overload import OverflowProtocol

    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    server_ctx.set_alpn_protocols(ALPN_PROTOCOLS)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(
        lambda: OverflowSelector(OverflowProtocol()), "127.0.0.1", 0, ssl=server_ctx
    )
    port = listener.sockets[0].getsockname()[1]

    def call(alpn: str) -> tuple[str | None, bytes]:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        ctx.set_alpn_protocols([alpn])
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            if alpn == "h2":
                conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
                conn.initiate_connection()
                conn.send_headers(
                    1,
                    [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/")],
                    end_stream=True,
                )
                tls.sendall(conn.data_to_send())
            else:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            data = b""
            with contextlib.suppress(OSError):
                while chunk := tls.recv(65536):
                    data += chunk
            return tls.selected_alpn_protocol(), data

    try:
        if flood:
            from wardgate.proxy.overload import MAX_OVERFLOW_LINGERING

            monkeypatch.setattr(OverflowProtocol, "lingering", MAX_OVERFLOW_LINGERING)
        alpn, data = await asyncio.to_thread(call, "h2")
        assert alpn == "h2"
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        client.initiate_connection()
        client.send_headers(
            1, [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/")]
        )
        events = client.receive_data(data)
        heads = [dict(e.headers) for e in events if isinstance(e, h2.events.ResponseReceived)]
        if flood:
            goaway = next(e for e in events if isinstance(e, h2.events.ConnectionTerminated))
            assert heads == [] and goaway.last_stream_id == 0
            assert OverflowProtocol.lingering == MAX_OVERFLOW_LINGERING  # nothing more held
            return
        assert heads and heads[0][b":status"] == b"503"
        assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
        alpn, data = await asyncio.to_thread(call, "http/1.1")
        assert alpn == "http/1.1"
        assert data.startswith(b"HTTP/1.1 503 ")
    finally:
        listener.close()
