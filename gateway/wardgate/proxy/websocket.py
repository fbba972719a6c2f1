"""WebSocket pass-through: after the request checks passed, open the same WebSocket to the
upstream and relay messages both ways until either side closes."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from wardgate.filters.api import HttpRequest
from wardgate.proxy.upstream import Upstream

if TYPE_CHECKING:
    from wardgate.proxy.handler import Exchange

# Handshake headers the client library sets itself for the upstream connection.
_HANDSHAKE = frozenset(
    {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "content-length",
    }
)


async def tunnel(
    request: web.BaseRequest, http_request: HttpRequest, upstream: Upstream, exchange: Exchange
) -> web.StreamResponse:
    protocols = tuple(
        p.strip() for p in request.headers.get("sec-websocket-protocol", "").split(",") if p.strip()
    )
    headers = {k: v for k, v in http_request.headers.items() if k.lower() not in _HANDSHAKE}
    try:
        upstream_ws = await upstream.session.ws_connect(
            upstream.url_for(http_request.raw_target),
            headers=headers,
            protocols=protocols,
            autoping=False,
            max_msg_size=0,
        )
    except aiohttp.WSServerHandshakeError as exc:
        exchange.status = exc.status or 502
        exchange.flag = "UC"
        return web.Response(status=exc.status or 502, text="upstream refused the WebSocket\n")
    except (aiohttp.ClientError, OSError):
        exchange.status = 503
        exchange.flag = "UF"
        return web.Response(status=503, text="upstream connect error\n")
    client_ws = web.WebSocketResponse(
        protocols=(upstream_ws.protocol,) if upstream_ws.protocol else (),
        autoping=False,
        max_msg_size=0,
    )
    await client_ws.prepare(request)
    exchange.status = 101

    async def relay(
        source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
        sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    ) -> None:
        async for message in source:
            if message.type == aiohttp.WSMsgType.TEXT:
                await sink.send_str(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await sink.send_bytes(message.data)
            elif message.type == aiohttp.WSMsgType.PING:
                await sink.ping(message.data)
            elif message.type == aiohttp.WSMsgType.PONG:
                await sink.pong(message.data)
            else:
                break
        await sink.close()

    tasks = [
        asyncio.create_task(relay(client_ws, upstream_ws)),
        asyncio.create_task(relay(upstream_ws, client_ws)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await upstream_ws.close()
        await client_ws.close()
    return client_ws
