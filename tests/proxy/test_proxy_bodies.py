"""Request bodies reach the upstream byte for byte on every path the proxy takes: a small
body of declared length sent with the head (one write), the same body arriving late and in
pieces, a large body streamed, a chunked body, keep-alive and pipelined requests."""

from __future__ import annotations

import asyncio
import os

import aiohttp

from tests.proxy.rawhttp import raw_request

EVERY_BYTE = bytes(range(256)) * 4  # 1 KiB with every byte value, CR/LF/NUL included
# The proxy path alone: the WAF (on by default) would read bodies like these as attacks.
PASS_THROUGH = 'limits: {maxRequestBodyBytes: 8388608}\nwaf: {mode: "off"}'


async def _open(gw):
    host, _, port = gw.process.state.listen.rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    """One response of declared length from a keep-alive connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


def _post(body: bytes, path: str = "/b") -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


async def test_small_body_with_the_head_is_forwarded_exactly(recording_upstream, gateway):
    url, seen = recording_upstream
    gw = await gateway(url, PASS_THROUGH)
    response = await raw_request(gw.process.state.listen, _post(EVERY_BYTE))
    assert response.status == 200
    assert seen == [("POST", "/b", EVERY_BYTE)]


async def test_small_body_arriving_late_in_pieces_is_forwarded_exactly(recording_upstream, gateway):
    url, seen = recording_upstream
    gw = await gateway(url, PASS_THROUGH)
    reader, writer = await _open(gw)
    try:
        request = _post(EVERY_BYTE)
        head_end = request.index(b"\r\n\r\n") + 4
        writer.write(request[:head_end])
        for piece in (EVERY_BYTE[:1], EVERY_BYTE[1:700], EVERY_BYTE[700:]):
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(piece)
        await writer.drain()
        assert b" 200 " in (await _read_response(reader)).split(b"\r\n", 1)[0]
    finally:
        writer.close()
    assert seen == [("POST", "/b", EVERY_BYTE)]


async def test_large_body_is_streamed_exactly(recording_upstream, gateway):
    url, seen = recording_upstream
    gw = await gateway(url, PASS_THROUGH)
    body = os.urandom(3 * 1024 * 1024 + 7)  # far above the one-write size
    async with aiohttp.ClientSession() as session:
        async with session.post(gw.url + "/big", data=body) as resp:
            assert resp.status == 200
    assert len(seen) == 1
    assert seen[0][2] == body


async def test_chunked_body_is_forwarded_exactly(recording_upstream, gateway):
    url, seen = recording_upstream
    gw = await gateway(url, PASS_THROUGH)
    parts = [os.urandom(n) for n in (1, 100, 70000, 3)]

    async def body():
        for part in parts:
            yield part

    async with aiohttp.ClientSession() as session:
        async with session.post(gw.url + "/chunked", data=body()) as resp:
            assert resp.status == 200
    assert seen == [("POST", "/chunked", b"".join(parts))]


async def test_keep_alive_and_pipelined_bodies_stay_apart(recording_upstream, gateway):
    url, seen = recording_upstream
    gw = await gateway(url, PASS_THROUGH)
    first, second, third = EVERY_BYTE, b"second\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n", b""
    reader, writer = await _open(gw)
    try:
        writer.write(_post(first, "/1"))
        await writer.drain()
        await _read_response(reader)
        # Two requests in one write: the second body must not leak into the first.
        writer.write(_post(second, "/2") + _post(third, "/3"))
        await writer.drain()
        await _read_response(reader)
        await _read_response(reader)
    finally:
        writer.close()
    assert seen == [("POST", "/1", first), ("POST", "/2", second), ("POST", "/3", third)]


async def _scripted_upstream(response: bytes):
    """An upstream answering every request head with ``response``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(response)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:  # also when the loop cancels the handler (the gateway's pooled connection)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_one_write_response_framing_and_keep_alive(gateway):
    """The complete small response written in one go keeps HTTP's framing rules: a length
    for a chunked upstream body, a Date, keep-alive as the client's version and
    ``Connection`` header say."""
    server, url = await _scripted_upstream(
        b"HTTP/1.1 201 Made\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    async with server:
        gw = await gateway(url, PASS_THROUGH)
        reader, writer = await _open(gw)
        try:
            # HTTP/1.1 keep-alive: two responses on one connection.
            for _ in range(2):
                writer.write(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
                response = await _read_response(reader)
                head, _, body = response.partition(b"\r\n\r\n")
                lines = head.lower().split(b"\r\n")
                assert lines[0] == b"http/1.1 201 made"
                assert b"content-length: 5" in lines and b"x-up: 1" in lines
                assert any(line.startswith(b"date: ") for line in lines)
                assert not any(line.startswith(b"connection:") for line in lines)
                assert body == b"abcde"
            # Connection: close from an HTTP/1.1 client: said so, then closed.
            writer.write(b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            response = await _read_response(reader)
            assert b"\r\nconnection: close\r\n" in response.lower()
            assert await asyncio.wait_for(reader.read(), 5) == b""
        finally:
            writer.close()
        for request, keep in (
            (b"GET /a HTTP/1.0\r\nHost: a\r\n\r\n", False),
            (b"GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", True),
        ):
            reader, writer = await _open(gw)
            try:
                writer.write(request)
                response = await _read_response(reader)
                assert response.startswith(b"HTTP/1.0 201 Made\r\n")
                assert (b"\r\nconnection: keep-alive\r\n" in response.lower()) is keep
                assert response.endswith(b"\r\n\r\nabcde")
                if not keep:
                    assert await asyncio.wait_for(reader.read(), 5) == b""
            finally:
                writer.close()
