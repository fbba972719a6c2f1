"""WebSocket upgrades pass through after the request checks; an upgrade the upstream
refuses or cannot take is answered like every other refusal."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp import web


@pytest.fixture
async def ws_upstream():
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("chat",))
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str("echo:" + msg.data + ":" + request.headers.get("x-tag", ""))
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        return ws

    async def refuse(request: web.Request) -> web.Response:
        return web.Response(status=403, text="no websockets here")

    app = web.Application()
    app.router.add_get("/ws", handler)
    app.router.add_get("/refused", refuse)  # answers the upgrade with 403
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_websocket_relays_both_ways(ws_upstream, gateway):
    gw = await gateway(ws_upstream)
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(
            gw.url + "/ws", protocols=("chat",), headers={"x-tag": "t1"}
        ) as ws:
            assert ws.protocol == "chat"
            await ws.send_str("hello")
            assert (await ws.receive_str(timeout=5)) == "echo:hello:t1"
            await ws.send_bytes(b"\x00\x01\x02")
            assert (await ws.receive_bytes(timeout=5)) == b"\x02\x01\x00"


async def test_websocket_upgrade_still_goes_through_the_checks(ws_upstream, gateway):
    gw = await gateway(ws_upstream, "limits: {maxHeadersCount: 8}")
    headers = {f"x-extra-{i}": "v" for i in range(10)}
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await session.ws_connect(gw.url + "/ws", headers=headers)
    assert info.value.status == 431


_UPGRADE = {
    "upgrade": "websocket",
    "connection": "Upgrade",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    "sec-websocket-version": "13",
}
_HEADER_POLICY = "headers: {response: {add: [{name: x-frame-options, value: DENY}]}}"


async def test_a_refused_upgrade_is_answered_like_every_refusal(ws_upstream, gateway):
    gw = await gateway(ws_upstream, _HEADER_POLICY)
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/refused", headers=_UPGRADE) as resp:
            problem = await resp.json(content_type="application/problem+json")
            headers = resp.headers
    assert resp.status == 403
    assert problem["reason"] == "websocket_refused"
    assert problem["requestId"] == headers["x-request-id"]
    assert headers["x-frame-options"] == "DENY"  # the response header policy applies
    record = gw.access_records()[-1]
    assert record["http.response.status_code"] == 403
    assert record["wardgate"]["reason"] == "websocket_refused"
    assert record["wardgate"]["replied_by"] == "gateway"
    assert record["wardgate"]["response_flags"] == "UC"


async def test_an_unreachable_upstream_is_answered_like_every_connect_failure(gateway):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    gw = await gateway(closed, _HEADER_POLICY)
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/ws", headers=_UPGRADE) as ws_resp:
            ws_body = await ws_resp.read()
        async with session.get(gw.url + "/plain") as plain:
            plain_body = await plain.read()
    assert (
        (ws_resp.status, ws_body)
        == (plain.status, plain_body)
        == (
            503,
            b"upstream connect error or disconnect/reset before headers. "
            b"reset reason: connection failure",
        )
    )
    assert ws_resp.headers["x-request-id"]
    assert ws_resp.headers["x-frame-options"] == "DENY"
    ws_record, plain_record = gw.access_records()[-2:]
    for record in (ws_record, plain_record):
        assert record["wardgate"]["response_flags"] == "UF"
        assert record["wardgate"]["reason"] == "connect_failure"
