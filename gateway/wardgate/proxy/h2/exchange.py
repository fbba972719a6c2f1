"""One HTTP/2 request stream through the policy to the upstream and back: the same
:class:`~wardgate.runtime.RequestPipeline`, access log and metrics as HTTP/1.1, over a
protocol-neutral request view (:class:`~wardgate.filters.api.HttpRequest`).

The upstream is reached over HTTP/2 (h2c, multiplexed) or HTTP/1.1 (pooled keep-alive
connections, Envoy's protocol translation), as ``--upstream-protocol`` says. gRPC calls
stream message by message; the gateway's own answers to them are gRPC statuses in a
trailers-only response, never a body a gRPC client cannot read."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass

from multidict import CIMultiDict

from wardgate.config.proxy import ProxySpec
from wardgate.filters.api import HttpRequest, HttpResponse, LocalReply
from wardgate.observability import metrics
from wardgate.observability.logs import AccessLog
from wardgate.observability.response_flags import ResponseFlag
from wardgate.proxy.body_io import apply_replaced_body
from wardgate.proxy.exchange import SERVER_HEADER, Exchange, note_local_reply, record_exchange
from wardgate.proxy.h2 import grpc
from wardgate.proxy.h2.body import (
    BodyRefused,
    BodyTimedOut,
    MessageInspector,
    body_timed_out,
    read_prefix,
    read_response_prefix,
    send_body,
)
from wardgate.proxy.h2.calls import Downstream, H1Call, UpstreamCall
from wardgate.proxy.h2.settings import H2Settings
from wardgate.proxy.h2.stream import StreamGone, StreamStalled
from wardgate.proxy.timeouts import BodyClock
from wardgate.proxy.upstream import Upstream, upstream_failure
from wardgate.proxy.upstream_client import InvalidHeaderValue, UpstreamError
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
    clock: BodyClock
    scanner: grpc.MessageScanner | None
    inspector: MessageInspector | None = None
    body_failed: bool = False


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
            BodyClock(policy.proxy),
            grpc.MessageScanner(policy.max_request_body_bytes) if is_grpc else None,
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
        prefix = await self._body_prefix(call)
        if prefix is not None:
            await self._forward(call, prefix)

    async def _body_prefix(self, call: _Call) -> bytes | None:
        """The body phase: the prefix the body filters judged (``b""`` when none asked),
        or ``None`` when the request was answered here."""
        stream = call.stream
        pipeline = call.pipeline
        policy = pipeline.policy
        limit = policy.request_body_limit
        if limit is None:
            return b""  # no filter wants the body
        prefix = b""
        complete = True
        if stream.has_body:
            try:
                prefix, complete = await read_prefix(
                    stream, limit, call.clock, policy.proxy.timeouts.idle, call.scanner
                )
            except BodyTimedOut:
                await self._local(call, body_timed_out())
                return None
            except BodyRefused as exc:
                await self._local(call, exc.reply)
                return None
        # gRPC: the cap is per message (the scanner's), not on the whole stream.
        if call.scanner is None:
            reply = await pipeline.decode_request_body(prefix, complete)
        else:
            reply = await pipeline.inspect_body(prefix, complete)
        if reply is not None:
            await self._local(call, reply)
            return None
        if call.scanner is not None and complete and stream.has_body:
            # Every later message of a streaming call is shown too, within what is left
            # of the inspection limit.
            call.inspector = MessageInspector(pipeline, limit - len(prefix))
        return prefix

    async def _forward(self, call: _Call, prefix: bytes) -> None:
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
            sender = asyncio.ensure_future(_send_body(call, up, prefix))
            sender.add_done_callback(
                functools.partial(_stop_on_refusal, call, up, asyncio.current_task())
            )
        try:
            try:
                async with asyncio.timeout(timeout):
                    if inline:
                        await _send_body(call, up, prefix)
                    await _await_head(up, sender)
            except BodyRefused as exc:
                up.abort()
                await self._local(call, exc.reply)
                return
            except BodyTimedOut:
                up.abort()
                await self._local(call, body_timed_out())
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
                prefix, complete = await read_response_prefix(up, limit, idle)
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
        if call.body_failed:
            return  # the stream was reset when a message was refused (_stop_on_refusal)
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


def _send_body(call: _Call, up: UpstreamCall, prefix: bytes) -> Awaitable[None]:
    return send_body(
        call.stream, up, call.pipeline, prefix, call.scanner, call.inspector, call.clock
    )


def _stop_on_refusal(
    call: _Call, up: UpstreamCall, main: asyncio.Task[object] | None, sender: asyncio.Task[None]
) -> None:
    """A message refused (or the body clock run out) after the response began (a
    streaming call): the refusal is logged, both streams are reset and the exchange's task
    stops (it may be waiting for an upstream that waits for more messages). Before the
    response began, :func:`_await_head` turns the failure into a local reply instead."""
    if sender.cancelled() or not call.stream.response_started:
        return
    error = sender.exception()
    if isinstance(error, BodyRefused | BodyTimedOut):
        call.body_failed = True
        reply = error.reply if isinstance(error, BodyRefused) else body_timed_out()
        note_local_reply(call.exchange, reply)
        call.stream.reset()
        up.abort()
        if main is not None and not main.done():
            main.cancel()


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


def _bad_header(exc: InvalidHeaderValue) -> LocalReply:
    return LocalReply(
        500,
        "gateway",
        "invalid_upstream_header",
        f"header {exc} would carry a line break to the upstream",
    )
