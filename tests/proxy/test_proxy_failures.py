"""Upstream failures become Envoy's local replies and response flags, never a traceback."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _get(url: str) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as resp:
            return resp.status, await resp.text(), resp.headers.copy()


async def test_upstream_down_is_503_uf(gateway):
    gw = await gateway(f"http://127.0.0.1:{_free_port()}")
    status, body, headers = await _get(gw.url + "/x")
    assert status == 503
    assert (
        body == "upstream connect error or disconnect/reset before headers. "
        "reset reason: connection failure"
    )
    assert headers["x-request-id"]
    record = gw.access_records()[-1]
    assert record["wardgate"]["response_flags"] == "UF"
    assert record["wardgate"]["replied_by"] == "gateway"


async def test_unresolvable_upstream_is_503_uh(gateway):
    gw = await gateway("http://wardgate-upstream.invalid:8080")
    status, body, _ = await _get(gw.url + "/x")
    assert (status, body) == (503, "no healthy upstream")
    assert gw.access_records()[-1]["wardgate"]["response_flags"] == "UH"


async def test_slow_upstream_is_504_ut(upstream, gateway):
    gw = await gateway(upstream, "proxy: {timeouts: {request: 300ms}}")
    status, body, _ = await _get(gw.url + "/delay/5")
    assert (status, body) == (504, "upstream request timeout")
    assert gw.access_records()[-1]["wardgate"]["response_flags"] == "UT"


async def _closing_server(respond_partially: bool) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            if respond_partially:
                # A binary type: it streams (a text body would be buffered for inspection by
                # the response WAF, and the reset would come before the status line, as a 503).
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Length: 1000\r\n\r\npartial"
                )
                await writer.drain()
        finally:  # the reset, also when the gateway went first or the loop cancels us
            writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_upstream_reset_before_headers_is_503_uc(gateway):
    server, port = await _closing_server(respond_partially=False)
    async with server:
        gw = await gateway(f"http://127.0.0.1:{port}")
        status, body, _ = await _get(gw.url + "/x")
    assert status == 503
    assert body.endswith("reset reason: connection termination")
    assert gw.access_records()[-1]["wardgate"]["response_flags"] == "UC"


async def test_upstream_reset_mid_body_resets_the_client(gateway):
    server, port = await _closing_server(respond_partially=True)
    async with server:
        gw = await gateway(f"http://127.0.0.1:{port}")
        async with aiohttp.ClientSession() as session:
            async with session.get(gw.url + "/x") as resp:
                assert resp.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
    await asyncio.sleep(0.05)
    assert gw.access_records()[-1]["wardgate"]["response_flags"] == "UC"


async def test_gateway_keeps_serving_after_failures(upstream, gateway):
    gw = await gateway(upstream, "proxy: {timeouts: {request: 200ms}}")
    for _ in range(3):
        assert (await _get(gw.url + "/delay/1"))[0] == 504
    assert (await _get(gw.url + "/echo"))[0] == 200
