"""Body I/O of the HTTP/1.1 proxy: reading the client's request body (the prefix the
body filters see, a small body whole, the rest streamed to the upstream counted against
the cap) and the upstream's response body prefix.

Contract: every byte read from the client goes to the upstream, in order, unchanged; a
body that cannot be read is :class:`ClientBodyError`, one over the cap
:class:`BodyTooLarge` carrying the pipeline's 413."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from wardgate.config.proxy import ProxySpec
from wardgate.filters.api import HttpResponse, LocalReply
from wardgate.observability.response_flags import ResponseFlag
from wardgate.proxy.exchange import Exchange
from wardgate.proxy.timeouts import BodyClock
from wardgate.proxy.upstream_client import UpstreamConnection
from wardgate.runtime import RequestPipeline

SMALL_BODY_BYTES = 64 * 1024
"""Request bodies of declared length up to this size are read whole and sent with the
request head in one write."""

NO_BODY = BodyClock(ProxySpec())
"""Never read from: stands in for the body clock of a request without a body."""


class BodyTooLarge(Exception):
    """The streamed request body went over the policy's cap; ``reply`` is the 413."""

    def __init__(self, reply: LocalReply) -> None:
        self.reply = reply
        super().__init__(reply.reason)


class ClientBodyError(Exception):
    """The client's request body could not be read (timeout, reset, bad chunking)."""


async def send_continue(request: web.BaseRequest) -> None:
    """Answer ``Expect: 100-continue`` only once the request headers passed every check, so
    a refused client never uploads its body."""
    if request.headers.get("expect", "").lower() == "100-continue" and request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


async def read_prefix(request: web.BaseRequest, limit: int, clock: BodyClock) -> tuple[bytes, bool]:
    """Read up to ``limit + 1`` body bytes. Returns what was read (all of it goes upstream)
    and whether the whole body fit in ``limit`` (the one extra byte tells, without waiting
    for an end-of-stream marker that a slow client may send late)."""
    content = request.content
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await clock.read(content.read(limit + 1 - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), size <= limit


async def read_small_body(request: web.BaseRequest, size: int, clock: BodyClock) -> bytes:
    """The next ``size`` bytes of a body of declared length, all of them or
    :class:`ClientBodyError`. When the parser already holds the whole body (it usually came
    in the same read as the head) they are taken without suspending: no timeout context,
    no extra event-loop turn."""
    content = request.content
    try:
        if content.is_eof():
            # Complete: feed_eof comes only once Content-Length bytes were parsed.
            body = content.read_nowait(-1)
            if len(body) != size:
                raise ClientBodyError(f"{len(body)} body bytes instead of {size}")
            return body
        return await clock.read(content.readexactly(size), expect=size)
    except (
        TimeoutError,
        asyncio.IncompleteReadError,
        aiohttp.ClientPayloadError,
        ConnectionError,
    ) as exc:
        raise ClientBodyError from exc


async def _body_stream(
    request: web.BaseRequest,
    prefix: bytes,
    pipeline: RequestPipeline,
    clock: BodyClock,
    exchange: Exchange,
) -> AsyncIterator[bytes]:
    """The request body for the upstream: the buffered prefix, then the rest as it arrives,
    each byte counted against the pipeline's body cap."""
    sent = 0
    if prefix:
        sent = len(prefix)
        exchange.bytes_received = sent
        yield prefix
    content = request.content
    while True:
        try:
            chunk = await clock.read(content.readany())
        except (TimeoutError, aiohttp.ClientPayloadError, ConnectionError) as exc:
            exchange.flag = ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION
            raise ClientBodyError from exc
        if not chunk:
            return
        sent += len(chunk)
        exchange.bytes_received = sent
        too_large = pipeline.check_body_size(sent)
        if too_large is not None:
            raise BodyTooLarge(too_large)
        yield chunk


async def send_body(
    conn: UpstreamConnection,
    request: web.BaseRequest,
    prefix: bytes,
    pipeline: RequestPipeline,
    clock: BodyClock,
    exchange: Exchange,
    chunked: bool,
) -> None:
    """Stream the request body to the upstream, re-chunked when the client chunked it."""
    async for chunk in _body_stream(request, prefix, pipeline, clock, exchange):
        if chunked:
            conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            conn.write(chunk)
        await conn.drain()
    if chunked:
        conn.write(b"0\r\n\r\n")


async def read_response_prefix(
    conn: UpstreamConnection, limit: int, idle: float
) -> tuple[bytes, bool]:
    """Up to ``limit + 1`` bytes of the response body, and whether it all fit in ``limit``."""
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await conn.read_chunk(idle)
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), size <= limit


def apply_replaced_body(
    headers: CIMultiDict[str], response: HttpResponse, prefix: bytes, limit: int, complete: bool
) -> bytes:
    """The response bytes to send after response filters saw ``prefix[:limit]``: unchanged,
    or with the inspected part replaced by the body a filter set (masking), in which case
    ``content-length`` is dropped, and set again when the whole body is known."""
    if response.body is None or response.body is prefix[:limit]:
        return prefix
    replaced = response.body + prefix[limit:]
    headers.popall("content-length", None)
    if complete:
        headers["content-length"] = str(len(replaced))
    return replaced
