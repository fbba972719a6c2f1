"""WebSocket upgrades pass through after the request checks."""

from __future__ import annotations

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

    app = web.Application()
    app.router.add_get("/ws", handler)
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
