"""The upstream HTTP/1.1 client against hand-written upstream responses."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
import pytest


async def _scripted(respond: Callable[[bytes], bytes], close: bool = False):
    """An upstream answering each request head with ``respond(head)``; records requests."""
    seen: list[bytes] = []
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen.append(head)
                writer.write(respond(head))
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:  # also when the loop cancels the handler at the end of the test
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen, connections


async def test_interim_responses_are_not_forwarded_and_connections_are_reused(gateway):
    server, url, seen, connections = await _scripted(
        lambda head: (
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Up: 1\r\n\r\nok"
        )
    )
    async with server:
        gw = await gateway(url)
        async with aiohttp.ClientSession() as session:
            for _ in range(5):
                async with session.get(gw.url + "/") as resp:
                    assert (resp.status, await resp.text(), resp.headers["x-up"]) == (
                        200,
                        "ok",
                        "1",
                    )
    assert len(seen) == 5 and len(connections) == 1


async def test_body_delimited_by_connection_close(gateway):
    server, url, _, _ = await _scripted(
        lambda head: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-the-end", close=True
    )
    async with server:
        gw = await gateway(url)
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.get(gw.url + "/") as resp:
                    assert await resp.text() == "until-the-end"


@pytest.mark.parametrize(("status", "method"), [(204, "GET"), (304, "GET"), (200, "HEAD")])
async def test_responses_without_body_keep_their_headers(gateway, status, method):
    server, url, seen, connections = await _scripted(
        lambda head: (
            f"HTTP/1.1 {status} X\r\nContent-Length: 10\r\nETag: e\r\n\r\n".encode()
            if status != 204
            else b"HTTP/1.1 204 No Content\r\nETag: e\r\n\r\n"
        )
    )
    async with server:
        gw = await gateway(url)
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.request(method, gw.url + "/") as resp:
                    assert resp.status == status
                    assert resp.headers["etag"] == "e"
                    assert await resp.read() == b""
    assert len(seen) == 2 and len(connections) == 1


async def test_invalid_upstream_response_is_503_uc(gateway):
    server, url, _, _ = await _scripted(lambda head: b"HTTP/1.1 OK\r\n\r\n")
    async with server:
        gw = await gateway(url)
        async with aiohttp.ClientSession() as session:
            async with session.get(gw.url + "/") as resp:
                assert resp.status == 503
    assert gw.access_records()[-1]["wardgate"]["response_flags"] == "UC"


async def test_upstream_answering_before_the_body_is_sent(gateway):
    server, url, _, _ = await _scripted(
        # Answers at once and keeps reading (closing with unread data would make the
        # kernel send a reset that destroys the response in flight: a TCP race, not ours).
        lambda head: b"HTTP/1.1 413 Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig",
    )

    async def body():
        for _ in range(100):
            yield b"z" * 65536
            await asyncio.sleep(0)

    async with server:
        # Over the WAF's inspection limit: let through uninspected, as this test streams.
        gw = await gateway(url, "waf: {oversizeAction: allowUninspected}")
        async with aiohttp.ClientSession() as session:
            async with session.post(gw.url + "/", data=body()) as resp:
                assert (resp.status, await resp.text()) == (413, "big")
            async with session.get(gw.url + "/") as resp:  # the gateway still serves
                assert resp.status == 413


async def test_request_head_is_written_as_received(gateway):
    server, url, seen, _ = await _scripted(
        lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    )
    async with server:
        gw = await gateway(url)
        async with aiohttp.ClientSession(
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding")
        ) as session:
            async with session.get(
                gw.url + "/p?q=%20", headers={"X-Multi": "a", "x-request-id": "rid"}
            ) as resp:
                assert resp.status == 200
    head = seen[0].decode()
    assert head.startswith("GET /p?q=%20 HTTP/1.1\r\n")
    assert "X-Multi: a\r\n" in head and "X-Request-ID: rid\r\n" in head
