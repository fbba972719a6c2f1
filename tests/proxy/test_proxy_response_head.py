"""Upstream response heads are bounded (issue 19, fault 5): a head over the policy's size or
field count is answered 502 with Envoy's ``UPE`` flag, counted, and never buffered whole."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from tests.proxy.stats import metric

Responder = Callable[[asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def head_upstream() -> AsyncIterator[Callable[[Responder], Awaitable[str]]]:
    """An upstream whose every answer is written by the test's ``respond``."""
    servers: list[asyncio.Server] = []

    async def start(respond: Responder) -> str:

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    await respond(writer)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


def _response(headers: list[bytes]) -> Responder:
    async def respond(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n" + b"".join(headers) + b"content-length: 2\r\n\r\nok")

    return respond


async def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession(max_field_size=65536) as session:
        async with session.get(url) as resp:
            return resp.status, dict(resp.headers), await resp.read()


@pytest.mark.parametrize(
    ("headers", "policy"),
    [
        ([b"x-big: " + b"v" * 200 * 1024 + b"\r\n"], ""),
        ([b"x-h%d: v\r\n" % i for i in range(20_000)], ""),
        ([b"x-big: " + b"v" * 3000 + b"\r\n"], "proxy: {maxResponseHeadersKb: 2}"),
        ([b"x-h%d: v\r\n" % i for i in range(11)], "proxy: {maxResponseHeadersCount: 10}"),
    ],
    ids=["200KiB-header", "20000-headers", "policy-size", "policy-count"],
)
async def test_oversized_response_head_is_502_upe(head_upstream, gateway, headers, policy):
    url = await head_upstream(_response(headers))
    gw = await gateway(url, "waf: {mode: off}\n" + policy)
    before = await metric(
        gw.admin_url,
        "wardgate_upstream_protocol_errors_total",
        'kind="response_headers_too_large"',
    )
    status, _, body = await _get(gw.url + "/x")
    assert status == 502
    assert b"protocol error" in body
    record = gw.access_records()[-1]
    assert "UPE" in str(record)
    after = await metric(
        gw.admin_url,
        "wardgate_upstream_protocol_errors_total",
        'kind="response_headers_too_large"',
    )
    assert after == before + 1


@pytest.mark.parametrize(
    ("headers", "policy"),
    [
        ([b"x-big: " + b"v" * 50 * 1024 + b"\r\n"], ""),
        ([b"x-h%d: v\r\n" % i for i in range(90)], ""),
        ([b"x-h%d: v\r\n" % i for i in range(10)], "proxy: {maxResponseHeadersCount: 11}"),
    ],
    ids=["50KiB-header", "90-headers", "policy-count"],
)
async def test_response_head_within_limits_passes(head_upstream, gateway, headers, policy):
    url = await head_upstream(_response(headers))
    gw = await gateway(url, "waf: {mode: off}\n" + policy)
    status, received, body = await _get(gw.url + "/x")
    assert status == 200 and body == b"ok"
    assert len([h for h in received if h.startswith("x-")]) >= len(headers) - 1


async def test_endless_response_header_is_cut_without_buffering_it(head_upstream, gateway):
    """The probe's 200 MiB header: the gateway must answer 502 after the limit, while the
    upstream is still sending, instead of buffering the whole head."""
    progress = {"sent": 0}

    async def respond(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nx-endless: ")
        for _ in range(200 * 16):  # 200 MiB in 64 KiB pieces
            writer.write(b"v" * 65536)
            await writer.drain()
            progress["sent"] += 65536

    url = await head_upstream(respond)
    gw = await gateway(url, "waf: {mode: off}")
    status, _, _ = await asyncio.wait_for(_get(gw.url + "/x"), 10)
    assert status == 502
    assert progress["sent"] < 32 * 1024 * 1024  # cut long before 200 MiB (socket buffers aside)
    status, _, _ = await _get(gw.url + "/x")
    assert status == 502  # and the gateway keeps serving
