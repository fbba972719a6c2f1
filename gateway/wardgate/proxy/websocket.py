"""WebSocket pass-through: after the request checks passed, open the same WebSocket to the
upstream and relay messages both ways until either side closes.

An upstream that cannot be reached, or refuses the upgrade, is answered like every other
refusal (:meth:`~wardgate.proxy.stream.ActiveStream.local`: problem body or Envoy's text,
``x-request-id``, response header policy, counted and logged)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from wardgate.filters.api import LocalReply
from wardgate.observability import metrics
from wardgate.observability.response_flags import ResponseFlag
from wardgate.proxy.stream import ActiveStream
from wardgate.proxy.upstream import UPSTREAM_FILTER, Upstream

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


def upgrade_refused(status: int) -> LocalReply:
    """The upstream answered the upgrade with ``status`` instead of ``101``."""
    return LocalReply(
        status,
        UPSTREAM_FILTER,
        "websocket_refused",
        f"the upstream refused the WebSocket upgrade ({status})",
        response_flag=ResponseFlag.UPSTREAM_CONNECTION_TERMINATION,
    )


async def tunnel(stream: ActiveStream, upstream: Upstream) -> web.StreamResponse:
    """Relay the WebSocket of ``stream``'s upgrade request to the upstream's."""
    request = stream.request
    http_request = stream.http_request
    exchange = stream.exchange
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
        metrics.UPSTREAM_FAILURES.labels(flag=ResponseFlag.UPSTREAM_CONNECTION_TERMINATION).inc()
        return stream.local(upgrade_refused(exc.status or 502))
    except (aiohttp.ClientError, OSError):
        return stream.upstream_failed(ResponseFlag.UPSTREAM_CONNECTION_FAILURE)
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
