"""Requests the HTTP parser itself refuses (issue 19, smaller items): above the parser's
ceilings the answer is the same 414/431 the policy's limits give, a request head is never
buffered past its ceiling, and each refusal is counted and logged at debug level, not as
an ERROR line with a traceback."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from tests.proxy.rawhttp import raw_request
from tests.proxy.stats import metric

PROTOCOL_ERRORS = "wardgate_downstream_protocol_errors_total"


@pytest.mark.parametrize(
    ("payload", "status", "reason"),
    [
        (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414, "url_too_long"),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nx-big: " + b"v" * 70_000 + b"\r\n\r\n",
            431,
            "headers_too_large",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\n"
            + b"".join(b"x-%d: v\r\n" % i for i in range(1100))
            + b"\r\n",
            431,
            "too_many_headers",
        ),
        (b"GET / HTTP/1.1\r\nHost: a\r\nbad header\r\n\r\n", 400, "bad_request"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400, "bad_request"),
    ],
    ids=["url", "header", "header-count", "garbage-header", "tls-on-http"],
)
async def test_parser_refusals_are_local_replies_counted_not_errors(
    upstream, gateway, caplog, payload, status, reason
):
    gw = await gateway(upstream)
    before = await metric(gw.admin_url, PROTOCOL_ERRORS, f'kind="{reason}"')
    with caplog.at_level(logging.DEBUG):
        response = await raw_request(gw.process.state.listen, payload)
    assert response.status == status, response.raw[:300]
    problem = json.loads(response.body)
    assert problem["reason"] == reason
    assert response.headers["x-request-id"] == problem["requestId"]
    assert await metric(gw.admin_url, PROTOCOL_ERRORS, f'kind="{reason}"') == before + 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r for r in caplog.records if r.getMessage() == "malformed request refused"]


async def test_request_head_past_the_ceiling_is_refused_before_it_ends(upstream, gateway):
    """Many header lines each under the parser's line ceiling: aiohttp would buffer them
    all (up to 1024 x 63 KiB); the gateway answers once the head passes 128 KiB, without
    waiting for its end."""
    gw = await gateway(upstream)
    host, _, port = gw.process.state.listen.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")
        for i in range(40):  # 40 x 4 KiB: over 128 KiB, and no blank line ever
            writer.write(b"x-%d: %b\r\n" % (i, b"v" * 4096))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 431 "), head


async def test_client_still_sending_after_a_refusal_reads_it_whole(upstream, gateway):
    """A client that keeps sending after the head's ceiling reads the whole 431 and then a
    clean end of stream: the gateway half-closes and discards the rest instead of closing
    on unread bytes (which answers them with RST and can destroy the reply unread)."""
    gw = await gateway(upstream)
    host, _, port = gw.process.state.listen.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))

    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n")
    try:
        for i in range(200):  # 800 KiB, far past the 128 KiB ceiling, before reading
            writer.write(b"x-%d: %b\r\n" % (i, b"v" * 4096))
            await asyncio.wait_for(writer.drain(), 10)
        await asyncio.sleep(0.3)  # the reply and whatever the gateway does next arrive
        data = b""
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                data += chunk
    finally:
        writer.close()
    assert data.startswith(b"HTTP/1.1 431 "), data[:200]
    assert data.endswith(b"}") or data.endswith(b"\n"), data[-200:]
    assert b'"reason":"headers_too_large"' in data


async def test_a_valid_request_after_refusals_still_works(upstream, gateway):
    gw = await gateway(upstream)
    await raw_request(gw.process.state.listen, b"GET / HTTP/1.1\r\nbad header\r\n\r\n")
    response = await raw_request(
        gw.process.state.listen, b"GET /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
    )
    assert response.status == 200
