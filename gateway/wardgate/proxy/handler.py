"""The reverse-proxy request handler: one HTTP/1.1 request from the client through the
policy to the upstream and back, streaming in both directions.

:class:`ProxyHandler` is aiohttp's low-level handler. For each request it builds an
:class:`~wardgate.proxy.stream.ActiveStream` (request, pipeline, exchange; every local
reply and the access-log record go through it) and runs:

1. the framing checks (:mod:`wardgate.proxy.framing`), then the pipeline's header phase;
2. WebSocket upgrades to :mod:`wardgate.proxy.websocket`;
3. the body phase and cap on the buffered prefix (:mod:`wardgate.proxy.body_io`);
4. the upstream exchange: a request whole in one write, or the body streamed while the
   response is awaited; the response phases, then the response in one write
   (:mod:`wardgate.proxy.one_write`) or streamed.

Requests for an h2c upstream are handed to :mod:`wardgate.proxy.h2` instead."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from wardgate.filters.api import HttpRequest, HttpResponse, LocalReply
from wardgate.observability import metrics
from wardgate.observability.logs import AccessLog
from wardgate.observability.response_flags import ResponseFlag
from wardgate.proxy.body_io import (
    NO_BODY,
    SMALL_BODY_BYTES,
    BodyTooLarge,
    ClientBodyError,
    apply_replaced_body,
    read_prefix,
    read_response_prefix,
    read_small_body,
    send_body,
    send_continue,
)
from wardgate.proxy.downstream import ClientConnection
from wardgate.proxy.exchange import SERVER_HEADER, Exchange, note_local_reply, record_exchange
from wardgate.proxy.framing import is_websocket, request_error, split_absolute_form
from wardgate.proxy.one_write import SentResponse, can_send_whole, send_whole
from wardgate.proxy.stream import ActiveStream
from wardgate.proxy.timeouts import BodyClock
from wardgate.proxy.tls import peer_of
from wardgate.proxy.upstream import Upstream
from wardgate.proxy.upstream_client import (
    InvalidHeaderValue,
    UpstreamConnection,
    UpstreamError,
    build_head,
)
from wardgate.proxy.websocket import tunnel
from wardgate.runtime import CompiledPolicy, PolicyHolder, RequestPipeline
from wardgate.runtime.forwarding import (
    apply_forwarded_headers,
    settle_request_id,
    strip_hop_by_hop,
)
from wardgate.runtime.identity import XFCC, set_client_cert_header

log = logging.getLogger("wardgate.proxy")

# Exchange and its helpers moved to proxy.exchange and proxy.body_io; still importable here.
__all__ = [
    "SERVER_HEADER",
    "Exchange",
    "ProxyHandler",
    "apply_replaced_body",
    "note_local_reply",
    "record_exchange",
    "send_continue",
]

_VERSIONS = {(1, 1): "HTTP/1.1", (1, 0): "HTTP/1.0"}
_DC = ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION


class ProxyHandler:
    """An aiohttp low-level handler (``web.Server(handler)``). With ``over_h2`` (the
    upstream speaks h2c), well-framed requests other than WebSocket upgrades are handed to
    it with their origin-form target."""

    def __init__(
        self,
        holder: PolicyHolder,
        upstream: Upstream,
        access_log: AccessLog,
        over_h2: Callable[[web.BaseRequest, str], Awaitable[web.StreamResponse]] | None = None,
    ) -> None:
        self.holder = holder
        self.upstream = upstream
        self.access_log = access_log
        self.over_h2 = over_h2

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        if self.over_h2 is not None and not is_websocket(request) and not request_error(request):
            absolute = split_absolute_form(request.raw_path)
            return await self.over_h2(request, absolute[2] if absolute else request.raw_path)
        exchange = Exchange.begin()
        policy = self.holder.current  # read once: this request keeps this generation
        pipeline = RequestPipeline(policy, self._build_request(request, policy))
        stream = ActiveStream(request, pipeline, exchange, self.access_log, self.upstream.host_port)
        response: web.StreamResponse
        try:
            response = await self._handle(stream)
        except asyncio.CancelledError:
            exchange.client_gone()
            raise
        except Exception as exc:
            # A bug must not become aiohttp's text/plain 500 with a traceback in the log:
            # refuse like any other internal failure, counted and logged by type.
            log.error(
                "request failed inside the gateway",
                extra={
                    "wardgate": {
                        "error": type(exc).__name__,
                        "request_id": stream.http_request.request_id,
                    }
                },
            )
            response = stream.local(
                LocalReply(
                    500,
                    "gateway",
                    "internal_error",
                    "the gateway failed to handle the request",
                    response_flag=ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR,
                ),
                close=True,
            )
        finally:
            stream.record()
        return response

    @staticmethod
    def _build_request(request: web.BaseRequest, policy: CompiledPolicy) -> HttpRequest:
        """The filters' view of the request: hop-by-hop headers gone, the request id and
        forwarding headers set, a client's own ``x-forwarded-client-cert`` dropped."""
        headers = strip_hop_by_hop(request.headers)
        proxy = policy.proxy
        settled = settle_request_id(headers, proxy)
        transport = request.transport
        connection = request.protocol
        if isinstance(connection, ClientConnection):
            remote, scheme = connection.client()
        else:
            peer = transport.get_extra_info("peername") if transport else None
            remote = peer[0] if peer else ""
            scheme = "https" if transport and transport.get_extra_info("sslcontext") else "http"
        client = apply_forwarded_headers(headers, proxy, remote, scheme)
        headers.popall(XFCC, None)  # a client's own x-forwarded-client-cert never passes
        version = request.version
        raw_target = request.raw_path
        absolute = split_absolute_form(raw_target)
        if absolute is not None:
            # Forwarded in origin form with the target's authority as Host (checked equal
            # to any Host sent, see absolute_form_error), so that filters and the
            # upstream see one name and one path.
            raw_target = absolute[2]
            if "host" not in headers and absolute[1]:
                headers["host"] = absolute[1]
        path, _, query = raw_target.partition("?")
        return HttpRequest(
            method=request.method,
            raw_target=raw_target,
            path=path,
            query=query,
            headers=headers,
            scheme=scheme,
            version=_VERSIONS.get(version) or f"HTTP/{version.major}.{version.minor}",
            client_address=client,
            request_id=settled.value,
            peer=peer_of(transport) if scheme == "https" else None,
            vouched=settled.vouched,
        )

    async def _handle(self, stream: ActiveStream) -> web.StreamResponse:
        """The request phases, then the upstream (or the WebSocket tunnel)."""
        request = stream.request
        framing = request_error(request)
        if framing is not None:
            return stream.local(
                LocalReply(
                    400,
                    "gateway",
                    "invalid_framing",
                    framing,
                    response_flag=ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR,
                ),
                close=True,
            )
        pipeline = stream.pipeline
        reply = await pipeline.decode_headers()
        if reply is not None:
            return stream.local(reply, close=True)
        http_request = stream.http_request
        if http_request.peer is not None:
            set_client_cert_header(http_request.headers, http_request.peer)
        if is_websocket(request):
            return await tunnel(stream, self.upstream)
        if not request.body_exists:
            # No body at all: the body phase still runs (a filter may require one). Skipped
            # outright when no filter reads bodies: the common GET costs no extra await.
            if stream.policy.request_body_limit is not None:
                reply = await pipeline.decode_request_body(b"", True)
                if reply is not None:
                    return stream.local(reply)
            return await self._forward(stream, b"", NO_BODY)
        await send_continue(request)
        clock = BodyClock(stream.policy.proxy)
        prefix = b""
        limit = stream.policy.request_body_limit
        if limit is not None:
            try:
                prefix, complete = await read_prefix(request, limit, clock)
            except (TimeoutError, aiohttp.ClientPayloadError, ConnectionError):
                stream.exchange.flag = _DC
                return stream.body_read_failed(clock, ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR)
            reply = await pipeline.decode_request_body(prefix, complete)
            if reply is not None:
                # Over the cap on the buffered prefix alone: refused before connecting.
                stream.exchange.bytes_received = len(prefix)
                return stream.local(reply, close=True)
        return await self._forward(stream, prefix, clock)

    async def _forward(
        self, stream: ActiveStream, prefix: bytes, clock: BodyClock
    ) -> web.StreamResponse:
        """Send the request upstream: in one write when it has no body or a small one of
        declared length, else the head and then the body streamed while the response is
        awaited."""
        http_request = stream.http_request
        has_body = stream.request.body_exists
        chunked = has_body and "content-length" not in http_request.headers
        try:
            head = build_head(
                http_request.method, http_request.raw_target, http_request.headers, chunked
            )
        except InvalidHeaderValue as exc:
            return stream.local(
                LocalReply(
                    500,
                    "gateway",
                    "invalid_upstream_header",
                    f"header {exc} would carry a line break to the upstream",
                ),
                close=True,
            )
        if has_body and not chunked:
            try:
                whole = await _with_small_body(stream, head, prefix, clock)
            except ClientBodyError:
                stream.exchange.flag = _DC
                return stream.body_read_failed(clock)
            except BodyTooLarge as exc:
                return stream.body_too_large(exc.reply)
            if whole is not None:
                head, has_body = whole, False
        upstream_start = time.monotonic()
        pool = self.upstream.pool
        conn = pool.take_idle()
        if conn is None:
            try:
                conn = await pool.acquire(stream.policy.proxy.timeouts.connect)
            except UpstreamError as exc:
                return stream.upstream_failed(exc.flag, exc.reason)
        if has_body:
            return await self._forward_streaming(
                stream, conn, head, prefix, chunked, upstream_start, clock
            )
        return await self._forward_whole(stream, conn, head, upstream_start)

    async def _forward_whole(
        self, stream: ActiveStream, conn: UpstreamConnection, head: bytes, upstream_start: float
    ) -> web.StreamResponse:
        """The common case: the whole request is in ``head``. One write, then the response
        headers, bounded by the request timeout (a timer on the connection)."""
        proxy = stream.policy.proxy
        headers_done = conn.begin(
            head_request=stream.http_request.method == "HEAD",
            timeout=proxy.timeouts.request,
            max_head_bytes=proxy.max_response_headers_kb * 1024,
            max_headers=proxy.max_response_headers_count,
        )
        try:
            conn.write(head)
            await headers_done
        except UpstreamError as exc:
            conn.close()
            return stream.upstream_failed(exc.flag)
        except TimeoutError:
            conn.close()
            return stream.upstream_failed(ResponseFlag.UPSTREAM_REQUEST_TIMEOUT)
        except BaseException:
            conn.close()  # cancelled (client gone): the response will never be read
            raise
        try:
            return await self._respond(stream, conn, upstream_start)
        finally:
            self.upstream.pool.release(conn)

    async def _forward_streaming(
        self,
        stream: ActiveStream,
        conn: UpstreamConnection,
        head: bytes,
        prefix: bytes,
        chunked: bool,
        upstream_start: float,
        clock: BodyClock,
    ) -> web.StreamResponse:
        """Send the head, then stream the body (bounded memory, counted against the cap)
        while waiting for the response: an upstream may answer before the body ends."""
        proxy = stream.policy.proxy
        headers_done = conn.begin(
            head_request=stream.request.method == "HEAD",
            max_head_bytes=proxy.max_response_headers_kb * 1024,
            max_headers=proxy.max_response_headers_count,
        )
        sender = asyncio.ensure_future(
            send_body(
                conn, stream.request, prefix, stream.pipeline, clock, stream.exchange, chunked
            )
        )
        try:
            conn.write(head)
            async with asyncio.timeout(proxy.timeouts.request):
                await asyncio.wait((sender, headers_done), return_when=asyncio.FIRST_COMPLETED)
                if sender.done() and sender.exception() is not None:
                    raise sender.exception()  # type: ignore[misc]
                await headers_done
        except BodyTooLarge as exc:
            conn.close()
            return stream.body_too_large(exc.reply)
        except ClientBodyError:
            conn.close()
            return stream.body_read_failed(clock)
        except UpstreamError as exc:
            conn.close()
            return stream.upstream_failed(exc.flag)
        except TimeoutError:
            conn.close()
            return stream.upstream_failed(ResponseFlag.UPSTREAM_REQUEST_TIMEOUT)
        except BaseException:
            conn.close()
            raise
        finally:
            if not headers_done.done():
                headers_done.cancel()
            if not sender.done() and conn.closed:
                sender.cancel()  # nothing left to send the body to
        try:
            return await self._respond(stream, conn, upstream_start)
        finally:
            if not sender.done():
                sender.cancel()
                conn.close()  # the upstream answered before the whole body was sent
            elif not sender.cancelled() and sender.exception() is not None:
                conn.close()
            self.upstream.pool.release(conn)

    async def _respond(
        self, stream: ActiveStream, conn: UpstreamConnection, upstream_start: float
    ) -> web.StreamResponse:
        """The response phases on the upstream's response (headers, then the body prefix
        filters asked for), then the response to the client."""
        exchange = stream.exchange
        pipeline = stream.pipeline
        elapsed = time.monotonic() - upstream_start
        metrics.observe_upstream_seconds(elapsed)
        exchange.upstream_ms = int(elapsed * 1000)
        headers = strip_hop_by_hop(conn.headers)
        response = HttpResponse(conn.status, headers)
        reply = pipeline.encode_headers(response)
        if reply is not None:
            return stream.local(reply)
        prefix = b""
        limit = pipeline.response_body_limit_for(response)
        if limit is not None:
            try:
                prefix, complete = await read_response_prefix(
                    conn, limit, stream.policy.proxy.timeouts.idle
                )
            except UpstreamError as exc:
                return stream.upstream_failed(exc.flag)
            reply = pipeline.encode_body(response, prefix[:limit], complete)
            if reply is not None:
                return stream.local(reply)
            prefix = apply_replaced_body(headers, response, prefix, limit, complete)
        headers["x-envoy-upstream-service-time"] = str(exchange.upstream_ms)
        headers.setdefault("server", SERVER_HEADER)
        exchange.status = response.status
        whole = conn.buffered_body() if can_send_whole(stream.request, response) else None
        if whole is not None:
            # The common small response, already complete: headers and body in one write.
            body = prefix + whole if prefix else whole
            try:
                sent = await send_whole(stream.request, response.status, conn.reason, headers, body)
            except (ConnectionError, aiohttp.ClientConnectionResetError):
                exchange.flag = _DC
                return SentResponse(response.status, keep_alive=False, body_length=0)
            exchange.bytes_sent = len(body)
            return sent
        return await _stream_response(stream, conn, response, prefix)


async def _with_small_body(
    stream: ActiveStream, head: bytes, prefix: bytes, clock: BodyClock
) -> bytes | None:
    """``head`` followed by the whole body when it is small (of declared length, at most
    :data:`SMALL_BODY_BYTES`): small bodies go out with the head in one write. ``None``:
    the body is larger and streams. Raises :class:`ClientBodyError` and
    :class:`BodyTooLarge` (the pipeline's cap on the declared length)."""
    declared = int(stream.http_request.headers["content-length"])
    if declared > SMALL_BODY_BYTES:
        return None
    rest = await read_small_body(stream.request, declared - len(prefix), clock)
    stream.exchange.bytes_received = declared
    too_large = stream.pipeline.check_body_size(declared)
    if too_large is not None:
        raise BodyTooLarge(too_large)
    return b"".join((head, prefix, rest))


async def _stream_response(
    stream: ActiveStream, conn: UpstreamConnection, response: HttpResponse, prefix: bytes
) -> web.StreamResponse:
    """Send the response head, the inspected prefix and then the rest of the upstream's
    body as it comes."""
    exchange = stream.exchange
    request = stream.request
    out = web.StreamResponse(status=response.status, reason=conn.reason or None)
    out.headers.extend(response.headers)
    try:
        await out.prepare(request)
        if prefix:
            await out.write(prefix)
            exchange.bytes_sent += len(prefix)
        async for chunk in conn.body(stream.policy.proxy.timeouts.idle):
            await out.write(chunk)
            exchange.bytes_sent += len(chunk)
    except UpstreamError as exc:
        # The upstream failed after the status line went out: nothing honest can be
        # sent any more, so reset the client connection as Envoy does.
        exchange.flag = exc.flag
        metrics.UPSTREAM_FAILURES.labels(flag=exc.flag).inc()
        if request.transport is not None:
            request.transport.abort()
        return out
    except (ConnectionError, aiohttp.ClientConnectionResetError):
        exchange.flag = _DC
        return out
    await out.write_eof()
    return out
