"""HTTP/1.1 clients in front of an h2c upstream (``--upstream-protocol h2c``): an aiohttp
request seen as a :class:`~wardgate.proxy.h2.exchange.Downstream`, so the HTTP/2
exchange (same filter chain, log and metrics) forwards it over the multiplexed h2c client.

Request framing has been checked by the HTTP/1.1 handler before it hands a request over;
response trailers, which an HTTP/1.1 response cannot carry through aiohttp, are dropped
(as Envoy does for HTTP/1.1 clients that did not ask for them)."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from wardgate.proxy.body_io import send_continue
from wardgate.proxy.h2.connection import StreamGone
from wardgate.proxy.h2.exchange import H2Gateway
from wardgate.proxy.tls import peer_of


class Http1Downstream:
    """One HTTP/1.1 request and its response, in the shape the exchange drives."""

    def __init__(self, request: web.BaseRequest, target: str) -> None:
        self.request = request
        self.method = request.method
        self.path = target
        self.authority = ""  # Host stays a header, as the client sent it
        self.protocol = ""
        version = request.version
        self.version = f"HTTP/{version.major}.{version.minor}"
        transport = request.transport
        self.tls = bool(transport and transport.get_extra_info("sslcontext"))
        peer = transport.get_extra_info("peername") if transport else None
        self.peer = peer[0] if peer else ""
        self.peer_identity = peer_of(transport) if self.tls else None
        self.headers = list(request.headers.items())
        self.trailers: list[tuple[str, str]] = []
        self.bytes_received = 0
        self.response_started = False
        self.response: web.StreamResponse | None = None
        self._continued = False
        self._ended = not request.body_exists

    @property
    def has_body(self) -> bool:
        return not self._ended

    @property
    def complete_body_bytes(self) -> int | None:
        return None  # read from aiohttp's stream as it comes

    async def read(self, idle: float) -> bytes:
        if self._ended:
            return b""
        if not self._continued:
            self._continued = True
            await send_continue(self.request)
        try:
            async with asyncio.timeout(idle):
                chunk = await self.request.content.readany()
        except (aiohttp.ClientPayloadError, ConnectionError) as exc:
            raise StreamGone from exc
        if not chunk:
            self._ended = True
        self.bytes_received += len(chunk)
        return chunk

    async def send_headers(self, headers: list[tuple[str, str]], end_stream: bool = False) -> None:
        if self.response is not None:
            if end_stream:  # trailers: nowhere to put them in HTTP/1.1 here
                await self.end()
            return
        self.response_started = True
        status = int(next(v for n, v in headers if n == ":status"))
        response = web.StreamResponse(status=status)
        for name, value in headers:
            if name[:1] != ":":
                response.headers.add(name, value)
        self.response = response
        try:
            await response.prepare(self.request)
            if end_stream:
                await response.write_eof()
        except (ConnectionError, aiohttp.ClientConnectionResetError) as exc:
            raise StreamGone from exc

    async def send_data(self, data: bytes, idle: float, end_stream: bool = False) -> None:
        assert self.response is not None
        try:
            async with asyncio.timeout(idle):
                await self.response.write(data)
                if end_stream:
                    await self.response.write_eof()
        except TimeoutError:
            from wardgate.proxy.h2.connection import StreamStalled

            raise StreamStalled from None
        except (ConnectionError, aiohttp.ClientConnectionResetError) as exc:
            raise StreamGone from exc

    async def end(self) -> None:
        if self.response is not None:
            try:
                await self.response.write_eof()
            except (ConnectionError, aiohttp.ClientConnectionResetError) as exc:
                raise StreamGone from exc

    def reset(self, code: int = 0) -> None:
        """Nothing honest can be sent any more: close the connection (as HTTP/1.1 says a
        response was cut)."""
        if self.request.transport is not None:
            self.request.transport.abort()


async def forward_http1_over_h2(
    gateway: H2Gateway, request: web.BaseRequest, target: str
) -> web.StreamResponse:
    """Run an HTTP/1.1 request through ``gateway`` (h2c upstream); returns the response
    aiohttp finishes (already prepared and ended, or a closed connection's stand-in)."""
    downstream = Http1Downstream(request, target)
    await gateway(downstream)
    if downstream.response is not None:
        return downstream.response
    response = web.Response(status=500)
    response.force_close()
    return response
