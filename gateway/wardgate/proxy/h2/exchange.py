"""One HTTP/2 request stream through the policy to the upstream and back: the same
:class:`~wardgate.runtime.RequestPipeline`, access log and metrics as HTTP/1.1, over a
protocol-neutral request view (:class:`~wardgate.filters.api.HttpRequest`).

The upstream is reached over HTTP/2 (h2c, multiplexed) or HTTP/1.1 (pooled keep-alive
connections, Envoy's protocol translation), as ``--upstream-protocol`` says. gRPC calls
stream message by message; the gateway's own answers to them are gRPC statuses in a
trailers-only response, never a body a gRPC client cannot read."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Protocol

from multidict import CIMultiDict

from wardgate.config.proxy import ProxySpec
from wardgate.filters.api import HttpRequest, HttpResponse, LocalReply
from wardgate.filters.identity import PeerIdentity
from wardgate.observability import metrics
from wardgate.observability.logs import AccessLog
from wardgate.observability.response_flags import ResponseFlag
from wardgate.proxy.body_io import apply_replaced_body
from wardgate.proxy.exchange import SERVER_HEADER, Exchange, note_local_reply, record_exchange
from wardgate.proxy.h2 import grpc
from wardgate.proxy.h2.connection import StreamGone, StreamStalled
from wardgate.proxy.h2.settings import H2Settings
from wardgate.proxy.upstream import Upstream, upstream_failure
from wardgate.proxy.upstream_client import (
    InvalidHeaderValue,
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    build_head,
)
from wardgate.runtime import PolicyHolder, RequestPipeline
from wardgate.runtime.forwarding import (
    apply_forwarded_headers,
    ensure_request_id,
    strip_hop_by_hop,
)
from wardgate.runtime.identity import set_client_cert_header

log = logging.getLogger("wardgate.h2")


INLINE_BODY_BYTES = 16384
"""A request body already received whole and at most this long is sent to the upstream
before waiting for its answer, without a task of its own (within any flow-control
window HTTP/2 allows)."""


class _BodyTooLarge(Exception):
    def __init__(self, reply: LocalReply) -> None:
        self.reply = reply
        super().__init__(reply.reason)


class Downstream(Protocol):
    """The client's side of one exchange: an HTTP/2 stream
    (:class:`~wardgate.proxy.h2.connection.DownstreamStream`), or an HTTP/1.1 request
    when HTTP/1.1 clients are forwarded over h2c (:mod:`wardgate.proxy.h2.http1`)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def authority(self) -> str: ...
    @property
    def protocol(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def tls(self) -> bool: ...
    @property
    def peer(self) -> str: ...
    @property
    def peer_identity(self) -> PeerIdentity | None:
        """The verified client certificate's identity (mutual TLS), else ``None``."""

    @property
    def headers(self) -> list[tuple[str, str]]: ...
    @property
    def trailers(self) -> list[tuple[str, str]]: ...
    @property
    def bytes_received(self) -> int: ...
    @property
    def response_started(self) -> bool: ...
    @property
    def has_body(self) -> bool: ...
    @property
    def complete_body_bytes(self) -> int | None:
        """Bytes of a request body already received whole; ``None`` while more may come."""

    async def read(self, idle: float) -> bytes: ...
    async def send_headers(
        self, headers: list[tuple[str, str]], end_stream: bool = False
    ) -> None: ...
    async def send_data(self, data: bytes, idle: float, end_stream: bool = False) -> None: ...
    async def end(self) -> None: ...
    def reset(self, code: int = ...) -> None: ...


class UpstreamCall(Protocol):
    """One exchange with the upstream, whatever its protocol."""

    status: int
    headers: list[tuple[str, str]]
    trailers: list[tuple[str, str]]
    head_ended: bool

    async def send(self, data: bytes, idle: float) -> None: ...
    def end(self, trailers: list[tuple[str, str]] | None = None) -> None: ...
    async def head(self) -> None: ...
    async def read(self, idle: float) -> bytes: ...
    def release(self) -> None: ...
    def abort(self) -> None: ...


class H1Call:
    """An exchange on a pooled HTTP/1.1 connection (the client spoke HTTP/2). Request
    trailers have no place in an HTTP/1.1 request the upstream would read and are
    dropped, as Envoy does."""

    def __init__(self, conn: UpstreamConnection, pool: UpstreamPool, chunked: bool) -> None:
        self.conn = conn
        self.pool = pool
        self.chunked = chunked
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.trailers: list[tuple[str, str]] = []
        self.head_ended = False
        self._headers_done: asyncio.Future[None] | None = None
        self._done = False

    @classmethod
    async def open(
        cls,
        pool: UpstreamPool,
        request: HttpRequest,
        has_body: bool,
        connect_timeout: float,
    ) -> H1Call:
        headers = request.headers
        chunked = has_body and "content-length" not in headers
        if len(headers.getall("cookie", ())) > 1:
            # HTTP/2 may split cookies; HTTP/1.1 needs one field (RFC 9113 8.2.3).
            headers = headers.copy()
            joined = "; ".join(headers.popall("cookie"))
            headers["cookie"] = joined
        head = build_head(request.method, request.raw_target, headers, chunked)
        conn = pool.take_idle() or await pool.acquire(connect_timeout)
        call = cls(conn, pool, chunked)
        call._headers_done = conn.begin(head_request=request.method == "HEAD")
        conn.write(head)
        return call

    async def send(self, data: bytes, idle: float) -> None:
        if self.chunked:
            self.conn.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.conn.write(data)
        await self.conn.drain()

    def end(self, trailers: list[tuple[str, str]] | None = None) -> None:
        if self.chunked and not self.conn.closed:
            self.conn.write(b"0\r\n\r\n")

    async def head(self) -> None:
        assert self._headers_done is not None
        await asyncio.shield(self._headers_done)
        self.status = self.conn.status
        self.headers = self.conn.headers

    async def read(self, idle: float) -> bytes:
        return await self.conn.read_chunk(idle)

    def release(self) -> None:
        if not self._done:
            self._done = True
            self.pool.release(self.conn)

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self.conn.close()


@dataclass(slots=True)
class _Call:
    """One stream's state on its way through."""

    stream: Downstream
    request: HttpRequest
    pipeline: RequestPipeline
    exchange: Exchange
    is_grpc: bool
    grpc_timeout: float | None
    te_trailers: bool


def _check_values(headers: CIMultiDict[str]) -> None:
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\x00" in value:
            raise InvalidHeaderValue(name)


class H2Gateway:
    """The stream handler of HTTP/2 connections (``async (DownstreamStream) -> None``)."""

    def __init__(
        self,
        holder: PolicyHolder,
        upstream: Upstream,
        access_log: AccessLog,
        settings: H2Settings,
    ) -> None:
        self.holder = holder
        self.upstream = upstream
        self.access_log = access_log
        self.settings = settings
        self.h2_pool = upstream.h2_pool

    @property
    def upstream_h2(self) -> bool:
        """Whether requests go to the upstream over HTTP/2 (``auto`` follows the client,
        which is HTTP/2 here)."""
        return self.settings.upstream_protocol != "http1"

    async def __call__(self, stream: Downstream) -> None:
        exchange = Exchange.begin()
        policy = self.holder.current  # read once: this stream keeps this generation
        request, te_trailers = self._build_request(stream, policy.proxy)
        pipeline = RequestPipeline(policy, request)
        content_type = request.headers.get("content-type", "")
        is_grpc = grpc.is_grpc(content_type)
        call = _Call(
            stream,
            request,
            pipeline,
            exchange,
            is_grpc,
            grpc.parse_timeout(request.headers.get("grpc-timeout")) if is_grpc else None,
            te_trailers,
        )
        try:
            await self._handle(call)
        except asyncio.CancelledError:
            exchange.client_gone()
            raise
        except StreamGone:
            exchange.client_gone()
        except StreamStalled:
            exchange.flag = ResponseFlag.STREAM_IDLE_TIMEOUT
            exchange.status = exchange.status or 499
            stream.reset()
        except Exception as exc:
            log.error(
                "request failed inside the gateway",
                extra={"wardgate": {"error": type(exc).__name__, "request_id": request.request_id}},
            )
            if stream.response_started:
                stream.reset()
            else:
                await self._local(
                    call,
                    LocalReply(
                        500,
                        "gateway",
                        "internal_error",
                        "the gateway failed to handle the request",
                        response_flag=ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR,
                    ),
                )
        finally:
            exchange.bytes_received = stream.bytes_received
            record_exchange(
                self.access_log,
                self.upstream.host_port,
                stream.method,
                request.headers.get("user-agent", ""),
                stream.authority or request.headers.get("host", ""),
                request,
                policy,
                exchange,
            )

    def _build_request(self, stream: Downstream, proxy: ProxySpec) -> tuple[HttpRequest, bool]:
        raw: CIMultiDict[str] = CIMultiDict(stream.headers)
        te_trailers = any(v.strip().lower() == "trailers" for v in raw.getall("te", ()))
        headers = strip_hop_by_hop(raw)
        if stream.authority and "host" not in headers:
            # What the upstream and the filters know as Host (Envoy does the same).
            headers["host"] = stream.authority
        request_id = ensure_request_id(headers, proxy)
        scheme = "https" if stream.tls else "http"
        client = apply_forwarded_headers(headers, proxy, stream.peer, scheme)
        # SANITIZE_SET, as on HTTP/1.1: a client's own x-forwarded-client-cert never
        # passes; the verified certificate's identity replaces it.
        set_client_cert_header(headers, stream.peer_identity)
        path, _, query = stream.path.partition("?")
        return (
            HttpRequest(
                method=stream.method,
                raw_target=stream.path,
                path=path,
                query=query,
                headers=headers,
                scheme=scheme,
                version=stream.version,
                client_address=client,
                request_id=request_id,
                peer=stream.peer_identity,
            ),
            te_trailers,
        )

    async def _handle(self, call: _Call) -> None:
        stream = call.stream
        pipeline = call.pipeline
        policy = pipeline.policy
        if stream.method == "CONNECT" or stream.protocol:
            await self._local(
                call,
                LocalReply(
                    405,
                    "gateway",
                    "connect_unsupported",
                    "CONNECT is not supported",
                    response_flag=ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR,
                ),
            )
            return
        authority = stream.authority
        hosts = call.request.headers.getall("host", ())
        if len(hosts) > 1 or (authority and hosts and hosts[0] != authority):
            # Two names for the target: refuse rather than let filters and the upstream
            # each pick one (RFC 9113 8.3.1: they must be the same).
            await self._local(
                call,
                LocalReply(
                    400,
                    "gateway",
                    "invalid_authority",
                    "host and :authority name different targets",
                    response_flag=ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR,
                ),
            )
            return
        reply = await pipeline.decode_headers()
        if reply is not None:
            await self._local(call, reply)
            return
        prefix = b""
        scanner = grpc.MessageScanner(policy.max_request_body_bytes) if call.is_grpc else None
        idle = policy.proxy.timeouts.idle
        limit = policy.request_body_limit
        if limit is not None:
            complete = True
            if stream.has_body:
                try:
                    prefix, complete = await _read_prefix(stream, limit, idle, scanner)
                except TimeoutError:
                    await self._local(call, _body_read_failed())
                    return
                except _BodyTooLarge as exc:
                    await self._local(call, exc.reply)
                    return
            # gRPC: the cap is per message (the scanner's), not on the whole stream.
            if scanner is None:
                reply = await pipeline.decode_request_body(prefix, complete)
            else:
                reply = await pipeline.inspect_body(prefix, complete)
            if reply is not None:
                await self._local(call, reply)
                return
        await self._forward(call, prefix, scanner)

    async def _forward(
        self, call: _Call, prefix: bytes, scanner: grpc.MessageScanner | None
    ) -> None:
        stream = call.stream
        request = call.request
        pipeline = call.pipeline
        timeouts = pipeline.policy.proxy.timeouts
        has_body = bool(prefix) or stream.has_body
        # A gRPC deadline replaces the route timeout: a client-streaming call gets its
        # response headers only at the end, and its client said how long it will wait.
        timeout = call.grpc_timeout if call.grpc_timeout is not None else timeouts.request
        try:
            _check_values(request.headers)
        except InvalidHeaderValue as exc:
            await self._local(call, _bad_header(exc))
            return
        upstream_start = time.monotonic()
        up: UpstreamCall
        try:
            if self.upstream_h2:
                up = await self.h2_pool.open_stream(
                    self._h2_head(call), end_stream=not has_body, connect_timeout=timeouts.connect
                )
            else:
                up = await H1Call.open(self.upstream.pool, request, has_body, timeouts.connect)
        except InvalidHeaderValue as exc:
            await self._local(call, _bad_header(exc))
            return
        except UpstreamError as exc:
            await self._upstream_failed(call, exc.flag)
            return
        sender: asyncio.Task[None] | None = None
        # A body already whole and small (most unary calls) goes up right here; a body
        # still arriving streams from a task while the response is awaited.
        pending = stream.complete_body_bytes
        inline = has_body and pending is not None and pending + len(prefix) <= INLINE_BODY_BYTES
        if has_body and not inline:
            sender = asyncio.ensure_future(
                self._send_body(call, up, prefix, scanner, idle=timeouts.idle)
            )
        try:
            try:
                async with asyncio.timeout(timeout):
                    if inline:
                        await self._send_body(call, up, prefix, scanner, idle=timeouts.idle)
                    await _await_head(up, sender)
            except _BodyTooLarge as exc:
                up.abort()
                await self._local(call, exc.reply)
                return
            except UpstreamError as exc:
                up.abort()
                await self._upstream_failed(call, exc.flag)
                return
            except TimeoutError:
                up.abort()
                if call.grpc_timeout is not None:
                    await self._grpc_deadline(call)
                else:
                    await self._upstream_failed(call, ResponseFlag.UPSTREAM_REQUEST_TIMEOUT)
                return
            await self._respond(call, up, upstream_start, sender)
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
            up.release()

    async def _send_body(
        self,
        call: _Call,
        up: UpstreamCall,
        prefix: bytes,
        scanner: grpc.MessageScanner | None,
        idle: float,
    ) -> None:
        """Stream the request body up as it arrives (flow control both ways), counted
        against the body cap, or for gRPC against the per-message cap."""
        stream = call.stream
        cap = call.pipeline.policy.max_request_body_bytes
        sent = 0
        chunk = prefix
        scanned = bool(prefix)  # the prefix was scanned when it was read
        while True:
            if chunk:
                sent += len(chunk)
                if scanner is not None:
                    if not scanned:
                        too_big = scanner.feed(chunk)
                        if too_big is not None:
                            raise _BodyTooLarge(_message_too_large(too_big, cap))
                else:
                    too_large = call.pipeline.check_body_size(sent)
                    if too_large is not None:
                        raise _BodyTooLarge(too_large)
                await up.send(chunk, idle)
            scanned = False
            try:
                chunk = await stream.read(idle)
            except TimeoutError:
                raise UpstreamError(
                    ResponseFlag.UPSTREAM_REQUEST_TIMEOUT, "idle timeout reading the request body"
                ) from None
            if not chunk:
                break
        up.end(stream.trailers or None)

    def _h2_head(self, call: _Call) -> list[tuple[str, str]]:
        request = call.request
        headers = request.headers
        authority = headers.get("host", call.stream.authority)
        out = [
            (":method", request.method),
            (":scheme", "https" if self.h2_pool.tls is not None else "http"),
            (":authority", authority),
            (":path", request.raw_target),
        ]
        out.extend(
            (name.lower(), value) for name, value in headers.items() if name.lower() != "host"
        )
        if call.te_trailers:
            out.append(("te", "trailers"))
        return out

    async def _respond(
        self,
        call: _Call,
        up: UpstreamCall,
        upstream_start: float,
        sender: asyncio.Task[None] | None,
    ) -> None:
        stream = call.stream
        pipeline = call.pipeline
        exchange = call.exchange
        elapsed = time.monotonic() - upstream_start
        metrics.UPSTREAM_DURATION.observe(elapsed)
        exchange.upstream_ms = int(elapsed * 1000)
        headers = strip_hop_by_hop(up.headers)
        response = HttpResponse(up.status, headers)
        reply = pipeline.encode_headers(response)
        if reply is not None:
            up.abort()
            await self._local(call, reply)
            return
        idle = pipeline.policy.proxy.timeouts.idle
        prefix = b""
        complete = up.head_ended
        limit = pipeline.response_body_limit_for(response)
        if limit is not None and not up.head_ended:
            try:
                prefix, complete = await _read_response_prefix(up, limit, idle)
            except UpstreamError as exc:
                await self._upstream_failed(call, exc.flag)
                return
            reply = pipeline.encode_body(response, prefix[:limit], complete)
            if reply is not None:
                up.abort()
                await self._local(call, reply)
                return
            prefix = apply_replaced_body(headers, response, prefix, limit, complete)
        headers["x-envoy-upstream-service-time"] = str(exchange.upstream_ms)
        headers.setdefault("server", SERVER_HEADER)
        exchange.status = response.status
        out = [(":status", str(response.status)), *headers.items()]
        if up.head_ended:
            await stream.send_headers(out, end_stream=True)
            return
        await stream.send_headers(out)
        try:
            if prefix:
                await stream.send_data(prefix, idle)
                exchange.bytes_sent += len(prefix)
            if not complete:
                while chunk := await up.read(idle):
                    await stream.send_data(chunk, idle)
                    exchange.bytes_sent += len(chunk)
        except UpstreamError as exc:
            # The upstream failed after the status went out: nothing honest can be sent
            # any more, so reset the stream as Envoy does.
            exchange.flag = exc.flag
            metrics.UPSTREAM_FAILURES.labels(flag=exc.flag).inc()
            stream.reset()
            return
        if sender is not None and sender.done() and not sender.cancelled():
            error = sender.exception()
            if isinstance(error, _BodyTooLarge):
                # A message over the cap after the response began: stop the call.
                note_local_reply(exchange, error.reply)
                stream.reset()
                return
        if up.trailers:
            await stream.send_headers(up.trailers, end_stream=True)
        else:
            await stream.end()

    async def _upstream_failed(self, call: _Call, flag: ResponseFlag) -> None:
        metrics.UPSTREAM_FAILURES.labels(flag=flag).inc()
        await self._local(call, upstream_failure(flag))

    async def _grpc_deadline(self, call: _Call) -> None:
        metrics.UPSTREAM_FAILURES.labels(flag=ResponseFlag.UPSTREAM_REQUEST_TIMEOUT).inc()
        reply = LocalReply(
            504,
            "upstream",
            "deadline_exceeded",
            "the grpc-timeout deadline passed before the upstream answered",
            response_flag=ResponseFlag.UPSTREAM_REQUEST_TIMEOUT,
        )
        await self._local(call, reply, grpc_status=grpc.DEADLINE_EXCEEDED)

    async def _local(self, call: _Call, reply: LocalReply, grpc_status: int | None = None) -> None:
        """Send a local reply (response header policy applied): for gRPC a trailers-only
        response with the mapped ``grpc-status``, otherwise the status and its body."""
        stream = call.stream
        if stream.response_started:
            stream.reset()
            return
        response = call.pipeline.local_response(reply)
        note_local_reply(call.exchange, reply)
        headers = response.headers
        headers.setdefault("server", SERVER_HEADER)
        headers["x-request-id"] = call.request.request_id
        if call.is_grpc:
            out = grpc.local_reply_headers(reply.status, reply.reason, reply.detail, headers)
            if grpc_status is not None:
                out = [(n, str(grpc_status) if n == "grpc-status" else v) for n, v in out]
            await stream.send_headers(out, end_stream=True)
            return
        body = response.body or b""
        if call.request.method == "HEAD":
            body = b""
        headers["content-length"] = str(len(response.body or b""))
        out = [(":status", str(response.status)), *headers.items()]
        await stream.send_headers(out, end_stream=not body)
        if body:
            await stream.send_data(body, call.pipeline.policy.proxy.timeouts.idle, end_stream=True)
            call.exchange.bytes_sent = len(body)


async def _await_head(up: UpstreamCall, sender: asyncio.Task[None] | None) -> None:
    """The response headers; while waiting, the body goes up, and an error sending it
    (too large, client gone) wins over waiting."""
    if sender is None:
        await up.head()
        return
    head = asyncio.ensure_future(up.head())
    try:
        await asyncio.wait((head, sender), return_when=asyncio.FIRST_COMPLETED)
        if sender.done() and not sender.cancelled() and sender.exception() is not None:
            raise sender.exception()  # type: ignore[misc]
        await head
    finally:
        if not head.done():
            head.cancel()


async def _read_prefix(
    stream: Downstream, limit: int, idle: float, scanner: grpc.MessageScanner | None
) -> tuple[bytes, bool]:
    """Up to ``limit + 1`` body bytes for the filters' body phase, and whether that is the
    whole body.

    For gRPC the body phase sees whole messages: reading stops at the first message
    boundary (a streaming call may wait for a response before it sends more, and must not
    deadlock on the gateway), and ``complete`` is true when the prefix ends with a whole
    message within ``limit``. Later messages of a stream are not shown to body filters;
    the per-message size cap still applies to every one."""
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await stream.read(idle)
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
        if scanner is not None:
            too_big = scanner.feed(chunk)
            if too_big is not None:
                raise _BodyTooLarge(_message_too_large(too_big, scanner.limit))
            if scanner.at_boundary:
                return b"".join(parts), size <= limit
    return b"".join(parts), False


async def _read_response_prefix(up: UpstreamCall, limit: int, idle: float) -> tuple[bytes, bool]:
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await up.read(idle)
        if not chunk:
            return b"".join(parts), True
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), False


def _message_too_large(size: int, cap: int | None) -> LocalReply:
    return LocalReply(
        413,
        "limits",
        "message_too_large",
        f"a gRPC message of {size} bytes is larger than {cap} bytes",
    )


def _body_read_failed() -> LocalReply:
    return LocalReply(
        400,
        "gateway",
        "body_read_failed",
        "the request body could not be read",
        response_flag=ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION,
    )


def _bad_header(exc: InvalidHeaderValue) -> LocalReply:
    return LocalReply(
        500,
        "gateway",
        "invalid_upstream_header",
        f"header {exc} would carry a line break to the upstream",
    )
