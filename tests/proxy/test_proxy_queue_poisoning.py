"""Response queue poisoning: bytes an upstream sends after a complete response must never be
served as the answer to a later request (issue 19, fault 1).

The upstream here answers request N with the body ``genuine-N``, then misbehaves in one of
three ways: a second, forged response in the same write; a body longer than its
Content-Length; or a forged response sent a moment later, while the connection sits idle in
the gateway's pool. Every client request must get its own ``genuine-N`` and nothing forged,
whatever the order and however the client sends (one by one, keep-alive, pipelined)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

FORGED = (
    b"HTTP/1.1 302 Found\r\nLocation: https://evil.example/\r\n"
    b"Set-Cookie: session=stolen\r\nContent-Length: 0\r\n\r\n"
)

Misbehaviour = Callable[[asyncio.StreamWriter, bytes], Awaitable[None]]


async def _second_response(writer: asyncio.StreamWriter, body: bytes) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body) + FORGED)


async def _long_body(writer: asyncio.StreamWriter, body: bytes) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    writer.write(b"EXTRA-BYTES-BEYOND-CONTENT-LENGTH")


async def _late_response(writer: asyncio.StreamWriter, body: bytes) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    await writer.drain()
    await asyncio.sleep(0.05)  # the gateway has answered and pooled the connection by now
    writer.write(FORGED)


async def _head_with_body(writer: asyncio.StreamWriter, body: bytes) -> None:
    # For a HEAD request, any body is excess; for other methods, a normal response.
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))


@pytest.fixture
async def misbehaving_upstream() -> AsyncIterator[Callable[[Misbehaviour], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(misbehave: Misbehaviour) -> str:
        counter = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal counter
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    counter += 1
                    await misbehave(writer, b"genuine-%d" % counter)
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


async def _protocol_errors(admin_url: str) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.get(admin_url + "/stats/prometheus") as resp:
            text = await resp.text()
    match = re.search(
        r'^wardgate_upstream_protocol_errors_total\{kind="excess_data"\} (\S+)$', text, re.M
    )
    return float(match.group(1)) if match else 0.0


@pytest.mark.parametrize(
    "misbehave", [_second_response, _long_body, _late_response], ids=["second", "long", "late"]
)
async def test_excess_upstream_bytes_never_answer_another_request(
    misbehaving_upstream, gateway, misbehave
):
    gw = await gateway(await misbehaving_upstream(misbehave), "waf: {mode: off}")
    bodies = []
    async with aiohttp.ClientSession() as session:
        for _ in range(6):
            async with session.get(gw.url + "/x", allow_redirects=False) as resp:
                assert resp.status == 200
                assert "set-cookie" not in resp.headers
                assert "location" not in resp.headers
                bodies.append(await resp.read())
            await asyncio.sleep(0.1)  # let a late forged response arrive on the pooled conn
    assert all(re.fullmatch(rb"genuine-\d+", body) for body in bodies), bodies
    assert len(set(bodies)) == 6  # every request reached the upstream and got its own answer
    assert await _protocol_errors(gw.admin_url) >= 5


async def test_pipelined_client_gets_its_own_responses(misbehaving_upstream, gateway):
    gw = await gateway(await misbehaving_upstream(_second_response), "waf: {mode: off}")
    host, _, port = gw.process.state.listen.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = b"GET /p HTTP/1.1\r\nHost: t.local\r\n\r\n"
    writer.write(request * 3)
    await writer.drain()
    received = b""
    async with asyncio.timeout(10):
        while received.count(b"genuine-") < 3:
            chunk = await reader.read(65536)
            assert chunk, received
            received += chunk
    writer.close()
    assert received.count(b"HTTP/1.1 200 ") == 3
    assert b"evil.example" not in received and b"stolen" not in received
    assert sorted(re.findall(rb"genuine-\d+", received)) == [
        b"genuine-1",
        b"genuine-2",
        b"genuine-3",
    ]


async def test_body_after_head_response_is_discarded(misbehaving_upstream, gateway):
    gw = await gateway(await misbehaving_upstream(_head_with_body), "waf: {mode: off}")
    async with aiohttp.ClientSession() as session:
        async with session.head(gw.url + "/h") as resp:
            assert resp.status == 200
        async with session.get(gw.url + "/g") as resp:
            assert resp.status == 200
            body = await resp.read()
    assert body == b"genuine-2"  # not the bytes the upstream sent after the HEAD response
    assert await _protocol_errors(gw.admin_url) >= 1
