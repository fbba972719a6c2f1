"""The reverse-proxy request handler: one request from the client through the policy to the
upstream and back, streaming in both directions."""

from __future__ import annotations

import asyncio
import email.utils
import http
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from wardgate.config.proxy import ProxySpec
from wardgate.filters.api import HttpRequest, HttpResponse, LocalReply
from wardgate.observability import metrics
from wardgate.observability.logs import AccessLog, AccessRecord
from wardgate.proxy.timeouts import BodyClock
from wardgate.proxy.tls import peer_of
from wardgate.proxy.upstream import UPSTREAM_FILTER, Upstream, upstream_failure
from wardgate.proxy.upstream_client import (
    InvalidHeaderValue,
    UpstreamConnection,
    UpstreamError,
    build_head,
)
from wardgate.runtime import CompiledPolicy, PolicyHolder, RequestPipeline
from wardgate.runtime.forwarding import (
    apply_forwarded_headers,
    settle_request_id,
    strip_hop_by_hop,
)
from wardgate.runtime.identity import XFCC, client_certificate_fields, set_client_cert_header

log = logging.getLogger("wardgate.proxy")

SERVER_HEADER = "wardgate"
READ_CHUNK = 256 * 1024
SMALL_BODY_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    """The streamed request body went over the policy's cap."""


@dataclass(slots=True)
class Exchange:
    """Per-request bookkeeping for the access log and metrics."""

    start: float
    wall_start: float
    bytes_received: int = 0
    bytes_sent: int = 0
    status: int = 0
    flag: str = ""
    replied_by: str = "upstream"
    reason: str = ""
    rule_ids: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()
    upstream_ms: int | None = None


_BAD_LENGTH = "invalid or conflicting Content-Length"
_VERSIONS = {(1, 1): "HTTP/1.1", (1, 0): "HTTP/1.0"}


def _framing_error(request: web.BaseRequest) -> str | None:
    """Request framing the gateway refuses rather than forward ambiguously (RFC 9112 6.1,
    6.3): both ``Transfer-Encoding`` and ``Content-Length``, several different
    ``Content-Length`` values, or a ``Transfer-Encoding`` that does not end in chunked."""
    headers = request.headers
    lengths = headers.getall("content-length", ())
    if "transfer-encoding" not in headers and len(lengths) <= 1:
        # The common case, decided without building sets or lists.
        return None if not lengths or lengths[0].strip().isdigit() else _BAD_LENGTH
    encodings = headers.getall("transfer-encoding", ())
    if encodings and lengths:
        return "both Transfer-Encoding and Content-Length"
    if len(set(lengths)) > 1 or any(not v.strip().isdigit() for v in lengths):
        return _BAD_LENGTH
    if encodings:
        codings = [c.strip().lower() for v in encodings for c in v.split(",")]
        if codings[-1] != "chunked" or codings.count("chunked") != 1:
            return "Transfer-Encoding must end with a single chunked"
    return None


def _split_absolute_form(target: str) -> tuple[str, str, str] | None:
    """``(scheme, authority, origin-form target)`` of an absolute-form request target
    (``http://other.example/a?b``), ``None`` for any other form."""
    if target[:1] == "/" or target == "*":
        return None
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    origin = rest[end:]
    if not origin.startswith("/"):
        origin = "/" + origin
    return scheme.lower(), rest[:end], origin


def _same_authority(host: str, authority: str, scheme: str) -> bool:
    default = ":443" if scheme == "https" else ":80"
    a, b = host.strip().lower(), authority.lower()
    return a.removesuffix(default) == b.removesuffix(default)


def _absolute_form_error(request: web.BaseRequest) -> str | None:
    """An absolute-form target (RFC 9112 3.2.2) whose authority is not the ``Host`` the
    request carries: the target would win at the upstream's discretion, filters would
    have checked the other name. Refused rather than guessed."""
    parts = _split_absolute_form(request.raw_path)
    if parts is None:
        return None
    scheme, authority, _ = parts
    hosts = request.headers.getall("host", ())
    if not authority or "@" in authority:
        return "the absolute-form request target has no valid authority"
    if len(hosts) > 1 or (hosts and not _same_authority(hosts[0], authority, scheme)):
        return "the request target names another host than the Host header"
    return None


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
        if (
            self.over_h2 is not None
            and not _is_websocket(request)
            and (_framing_error(request) or _absolute_form_error(request)) is None
        ):
            absolute = _split_absolute_form(request.raw_path)
            return await self.over_h2(request, absolute[2] if absolute else request.raw_path)
        exchange = Exchange(start=time.monotonic(), wall_start=time.time())
        policy = self.holder.current  # read once: this request keeps this generation
        http_request = self._build_request(request, policy)
        pipeline = RequestPipeline(policy, http_request)
        response: web.StreamResponse
        try:
            response = await self._handle(request, http_request, pipeline, exchange)
        except asyncio.CancelledError:
            exchange.flag = exchange.flag or "DC"
            exchange.status = exchange.status or 499
            raise
        except Exception as exc:
            # A bug must not become aiohttp's text/plain 500 with a traceback in the log:
            # refuse like any other internal failure, counted and logged by type.
            log.error(
                "request failed inside the gateway",
                extra={
                    "wardgate": {"error": type(exc).__name__, "request_id": http_request.request_id}
                },
            )
            response = await self._local(
                request,
                pipeline,
                exchange,
                LocalReply(
                    500,
                    "gateway",
                    "internal_error",
                    "the gateway failed to handle the request",
                    response_flag="DPE",
                ),
                close=True,
            )
        finally:
            self._record(request, http_request, policy, exchange)
        return response

    def _build_request(self, request: web.BaseRequest, policy: CompiledPolicy) -> HttpRequest:
        headers = strip_hop_by_hop(request.headers)
        proxy = policy.proxy
        settled = settle_request_id(headers, proxy)
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport else None
        remote = peer[0] if peer else ""
        scheme = "https" if transport and transport.get_extra_info("sslcontext") else "http"
        client = apply_forwarded_headers(headers, proxy, remote, scheme)
        headers.popall(XFCC, None)  # a client's own x-forwarded-client-cert never passes
        version = request.version
        raw_target = request.raw_path
        absolute = _split_absolute_form(raw_target)
        if absolute is not None:
            # Forwarded in origin form with the target's authority as Host (checked equal
            # to any Host sent, see _absolute_form_error), so that filters and the
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

    async def _handle(
        self,
        request: web.BaseRequest,
        http_request: HttpRequest,
        pipeline: RequestPipeline,
        exchange: Exchange,
    ) -> web.StreamResponse:
        framing = _framing_error(request) or _absolute_form_error(request)
        if framing is not None:
            return await self._local(
                request,
                pipeline,
                exchange,
                LocalReply(400, "gateway", "invalid_framing", framing, response_flag="DPE"),
                close=True,
            )
        reply = await pipeline.decode_headers()
        if reply is not None:
            return await self._local(request, pipeline, exchange, reply, close=True)
        if http_request.peer is not None:
            set_client_cert_header(http_request.headers, http_request.peer)
        if _is_websocket(request):
            from wardgate.proxy.websocket import tunnel

            return await tunnel(request, http_request, self.upstream, exchange)
        prefix = b""
        policy = pipeline.policy
        clock: BodyClock | None = None
        if request.body_exists:
            await send_continue(request)
            clock = BodyClock(policy.proxy)
            if pipeline.needs_request_body:
                limit = policy.request_body_limit or 0
                try:
                    prefix, complete = await _read_prefix(request, limit, clock)
                except (TimeoutError, aiohttp.ClientPayloadError, ConnectionError):
                    exchange.flag = "DC"
                    return await self._body_read_failed(
                        request, pipeline, exchange, response_flag="DPE", clock=clock
                    )
                reply = await pipeline.decode_body(prefix[:limit], complete)
                if reply is not None:
                    return await self._local(request, pipeline, exchange, reply, close=True)
                cap = policy.max_request_body_bytes
                if cap is not None and len(prefix) > cap:
                    # The buffered prefix alone is over the cap: refuse before connecting.
                    exchange.bytes_received = len(prefix)
                    return await self._body_too_large(request, pipeline, exchange, cap)
        elif pipeline.needs_request_body:
            # No body at all: the body phase still runs (a filter may require one).
            reply = await pipeline.decode_body(b"", True)
            if reply is not None:
                return await self._local(request, pipeline, exchange, reply)
        return await self._forward(request, http_request, pipeline, exchange, prefix, clock)

    async def _forward(
        self,
        request: web.BaseRequest,
        http_request: HttpRequest,
        pipeline: RequestPipeline,
        exchange: Exchange,
        prefix: bytes,
        clock: BodyClock | None,
    ) -> web.StreamResponse:
        policy = pipeline.policy
        timeouts = policy.proxy.timeouts
        cap = policy.max_request_body_bytes
        has_body = request.body_exists
        if clock is None:
            # Allocated only for requests with a body: most have none.
            clock = BodyClock(policy.proxy) if has_body else _NO_BODY
        chunked = has_body and "content-length" not in http_request.headers
        try:
            head = build_head(
                http_request.method, http_request.raw_target, http_request.headers, chunked
            )
        except InvalidHeaderValue as exc:
            return await self._local(
                request,
                pipeline,
                exchange,
                LocalReply(
                    500,
                    "gateway",
                    "invalid_upstream_header",
                    f"header {exc} would carry a line break to the upstream",
                ),
                close=True,
            )
        if has_body and not chunked:
            declared = int(http_request.headers["content-length"])
            if declared <= SMALL_BODY_BYTES:
                # Small bodies of declared length go out with the head in one write.
                try:
                    rest = await _read_small_body(request, declared - len(prefix), clock)
                except ClientBodyError:
                    exchange.flag = "DC"
                    return await self._body_read_failed(request, pipeline, exchange, clock=clock)
                exchange.bytes_received = declared
                if cap is not None and declared > cap:
                    return await self._body_too_large(request, pipeline, exchange, cap)
                head = b"".join((head, prefix, rest))
                has_body = False
        upstream_start = time.monotonic()
        pool = self.upstream.pool
        conn = pool.take_idle()
        if conn is None:
            try:
                conn = await pool.acquire(timeouts.connect)
            except UpstreamError as exc:
                return await self._upstream_failed(
                    request, pipeline, exchange, exc.flag, exc.reason
                )
        if has_body:
            return await self._forward_streaming(
                request, pipeline, exchange, conn, head, prefix, chunked, upstream_start, clock
            )
        # The common case: the whole request is in ``head``. One write, then the response
        # headers, bounded by the request timeout (a timer on the connection).
        headers_done = conn.begin(
            head_request=http_request.method == "HEAD",
            timeout=timeouts.request,
            max_head_bytes=policy.proxy.max_response_headers_kb * 1024,
            max_headers=policy.proxy.max_response_headers_count,
        )
        try:
            conn.write(head)
            await headers_done
        except UpstreamError as exc:
            conn.close()
            return await self._upstream_failed(request, pipeline, exchange, exc.flag)
        except TimeoutError:
            conn.close()
            return await self._upstream_failed(request, pipeline, exchange, "UT")
        except BaseException:
            conn.close()  # cancelled (client gone): the response will never be read
            raise
        try:
            return await self._respond(request, pipeline, exchange, conn, upstream_start)
        finally:
            pool.release(conn)

    async def _forward_streaming(
        self,
        request: web.BaseRequest,
        pipeline: RequestPipeline,
        exchange: Exchange,
        conn: UpstreamConnection,
        head: bytes,
        prefix: bytes,
        chunked: bool,
        upstream_start: float,
        clock: BodyClock,
    ) -> web.StreamResponse:
        """Send the head, then stream the body (bounded memory, counted against the cap)
        while waiting for the response: an upstream may answer before the body ends."""
        policy = pipeline.policy
        timeouts = policy.proxy.timeouts
        cap = policy.max_request_body_bytes
        pool = self.upstream.pool
        headers_done = conn.begin(
            head_request=request.method == "HEAD",
            max_head_bytes=policy.proxy.max_response_headers_kb * 1024,
            max_headers=policy.proxy.max_response_headers_count,
        )
        sender = asyncio.ensure_future(
            _send_body(conn, request, prefix, cap, clock, exchange, chunked)
        )
        try:
            conn.write(head)
            async with asyncio.timeout(timeouts.request):
                await asyncio.wait((sender, headers_done), return_when=asyncio.FIRST_COMPLETED)
                if sender.done() and sender.exception() is not None:
                    raise sender.exception()  # type: ignore[misc]
                await headers_done
        except BodyTooLarge:
            conn.close()
            return await self._body_too_large(request, pipeline, exchange, cap)
        except ClientBodyError:
            conn.close()
            return await self._body_read_failed(request, pipeline, exchange, clock=clock)
        except UpstreamError as exc:
            conn.close()
            return await self._upstream_failed(request, pipeline, exchange, exc.flag)
        except TimeoutError:
            conn.close()
            return await self._upstream_failed(request, pipeline, exchange, "UT")
        except BaseException:
            conn.close()
            raise
        finally:
            if not headers_done.done():
                headers_done.cancel()
            if not sender.done() and conn.closed:
                sender.cancel()  # nothing left to send the body to
        try:
            return await self._respond(request, pipeline, exchange, conn, upstream_start)
        finally:
            if not sender.done():
                sender.cancel()
                conn.close()  # the upstream answered before the whole body was sent
            elif not sender.cancelled() and sender.exception() is not None:
                conn.close()
            pool.release(conn)

    async def _body_read_failed(
        self,
        request: web.BaseRequest,
        pipeline: RequestPipeline,
        exchange: Exchange,
        response_flag: str = "DC",
        clock: BodyClock | None = None,
    ) -> web.StreamResponse:
        """400 ``body_read_failed`` and close: the client's body could not be read; 408
        ``request_body_timeout`` when it did not arrive in time (the body clock ran out)."""
        if clock is not None and clock.timed_out:
            return await self._local(
                request,
                pipeline,
                exchange,
                LocalReply(
                    408,
                    "gateway",
                    "request_body_timeout",
                    "the request body did not arrive in time",
                    response_flag="SI",
                ),
                close=True,
            )
        return await self._local(
            request,
            pipeline,
            exchange,
            LocalReply(
                400,
                "gateway",
                "body_read_failed",
                "the request body could not be read",
                response_flag=response_flag,
            ),
            close=True,
        )

    async def _upstream_failed(
        self,
        request: web.BaseRequest,
        pipeline: RequestPipeline,
        exchange: Exchange,
        flag: str,
        reason: str = "",
    ) -> web.StreamResponse:
        metrics.UPSTREAM_FAILURES.labels(flag=flag).inc()
        return await self._local(request, pipeline, exchange, upstream_failure(flag, reason))

    async def _respond(
        self,
        request: web.BaseRequest,
        pipeline: RequestPipeline,
        exchange: Exchange,
        conn: UpstreamConnection,
        upstream_start: float,
    ) -> web.StreamResponse:
        elapsed = time.monotonic() - upstream_start
        metrics.UPSTREAM_DURATION.observe(elapsed)
        exchange.upstream_ms = int(elapsed * 1000)
        headers = strip_hop_by_hop(conn.headers)
        response = HttpResponse(conn.status, headers)
        reply = pipeline.encode_headers(response)
        if reply is not None:
            return await self._local(request, pipeline, exchange, reply)
        idle = pipeline.policy.proxy.timeouts.idle
        prefix = b""
        limit = pipeline.response_body_limit_for(response)
        if limit is not None:
            try:
                prefix, complete = await _read_response_prefix(conn, limit, idle)
            except UpstreamError as exc:
                return await self._upstream_failed(request, pipeline, exchange, exc.flag)
            reply = pipeline.encode_body(response, prefix[:limit], complete)
            if reply is not None:
                return await self._local(request, pipeline, exchange, reply)
            prefix = apply_replaced_body(headers, response, prefix, limit, complete)
        headers["x-envoy-upstream-service-time"] = str(exchange.upstream_ms)
        headers.setdefault("server", SERVER_HEADER)
        exchange.status = response.status
        whole = conn.buffered_body() if http_request_can_buffer(request, response) else None
        if whole is not None:
            # The common small response, already complete: headers and body in one write.
            body = prefix + whole if prefix else whole
            try:
                sent = await _send_whole(request, response.status, conn.reason, headers, body)
            except (ConnectionError, aiohttp.ClientConnectionResetError):
                exchange.flag = "DC"
                return _SentResponse(response.status, keep_alive=False, body_length=0)
            exchange.bytes_sent = len(body)
            return sent
        out = web.StreamResponse(status=response.status, reason=conn.reason or None)
        out.headers.extend(headers)
        try:
            await out.prepare(request)
            if prefix:
                await out.write(prefix)
                exchange.bytes_sent += len(prefix)
            async for chunk in conn.body(idle):
                await out.write(chunk)
                exchange.bytes_sent += len(chunk)
        except UpstreamError as exc:
            # The upstream failed after the status line went out: nothing honest can be
            # sent any more, so reset the client connection as Envoy does.
            exchange.flag = exc.flag
            metrics.UPSTREAM_FAILURES.labels(flag=exc.flag).inc()
            _abort(request)
            return out
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            exchange.flag = "DC"
            return out
        await out.write_eof()
        return out

    async def _body_too_large(
        self,
        request: web.BaseRequest,
        pipeline: RequestPipeline,
        exchange: Exchange,
        cap: int | None,
    ) -> web.StreamResponse:
        exchange.flag = ""
        return await self._local(
            request,
            pipeline,
            exchange,
            LocalReply(
                413,
                "limits",
                "body_too_large",
                f"the request body is larger than {cap} bytes",
            ),
            close=True,
        )

    async def _local(
        self,
        request: web.BaseRequest,
        pipeline: RequestPipeline,
        exchange: Exchange,
        reply: LocalReply,
        close: bool = False,
    ) -> web.StreamResponse:
        """Send a local reply (with the response header policy applied)."""
        response = pipeline.local_response(reply)
        note_local_reply(exchange, reply)
        headers: CIMultiDict[str] = response.headers
        headers.setdefault("server", SERVER_HEADER)
        headers["x-request-id"] = pipeline.request.request_id
        body = response.body or b""
        out = web.Response(status=response.status, body=body, headers=headers)
        if close:
            # The body may be unread: never try to parse what follows as a new request.
            out.force_close()
        exchange.bytes_sent = len(body)
        return out

    def _record(
        self,
        request: web.BaseRequest,
        http_request: HttpRequest,
        policy: CompiledPolicy,
        exchange: Exchange,
    ) -> None:
        headers = request.headers
        record_exchange(
            self.access_log,
            self.upstream.host_port,
            request.method,
            headers.get("user-agent", ""),
            headers.get("host", ""),
            http_request,
            policy,
            exchange,
        )


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


def note_local_reply(exchange: Exchange, reply: LocalReply) -> None:
    """Book a local reply on the exchange (status, who answered, why) for log and metrics."""
    exchange.status = reply.status
    exchange.replied_by = reply.filter if reply.filter != UPSTREAM_FILTER else "gateway"
    exchange.reason = reply.reason
    exchange.flag = reply.response_flag or exchange.flag
    exchange.rule_ids = tuple(v.rule_id for v in reply.violations)
    exchange.locations = tuple(v.location for v in reply.violations)


def record_exchange(
    access_log: AccessLog,
    upstream_host: str,
    method: str,
    user_agent: str,
    authority: str,
    http_request: HttpRequest,
    policy: CompiledPolicy,
    exchange: Exchange,
) -> None:
    """Metrics and the access-log record of one finished exchange, whatever the client's
    protocol (HTTP/1.1 here, HTTP/2 in :mod:`wardgate.proxy.h2`)."""
    duration = time.monotonic() - exchange.start
    metrics.REQUEST_DURATION.observe(duration)
    metrics.count_request(exchange.status, exchange.replied_by)
    if http_request.findings:
        metrics.DETECTIONS.labels(filter=http_request.findings[0].rule_id.split(".")[0]).inc()
    if not access_log.enabled:
        return
    access_log.write(
        AccessRecord(
            start=exchange.wall_start,
            method=method,
            path=http_request.path,
            protocol=http_request.version,
            status=exchange.status,
            response_flags=exchange.flag if exchange.flag != "413" else "",
            bytes_received=exchange.bytes_received,
            bytes_sent=exchange.bytes_sent,
            duration_ms=int(duration * 1000),
            upstream_service_time_ms=exchange.upstream_ms,
            forwarded_for=http_request.headers.get("x-forwarded-for", ""),
            user_agent=user_agent,
            request_id=http_request.request_id,
            authority=authority,
            upstream_host=upstream_host if exchange.upstream_ms is not None else "",
            client_address=http_request.client_address,
            replied_by=exchange.replied_by,
            reason=exchange.reason,
            rule_ids=exchange.rule_ids,
            locations=exchange.locations,
            policy_digest=policy.short_digest,
            policy_generation=policy.generation,
            findings=tuple(f"{v.rule_id}@{v.location}" for v in http_request.findings),
            client_certificate=client_certificate_fields(http_request.peer),
        )
    )


def _is_websocket(request: web.BaseRequest) -> bool:
    return request.headers.get("upgrade", "").lower() == "websocket" and "upgrade" in (
        request.headers.get("connection", "").lower()
    )


async def send_continue(request: web.BaseRequest) -> None:
    """Answer ``Expect: 100-continue`` only once the request headers passed every check, so
    a refused client never uploads its body."""
    if request.headers.get("expect", "").lower() == "100-continue" and request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")


async def _read_prefix(
    request: web.BaseRequest, limit: int, clock: BodyClock
) -> tuple[bytes, bool]:
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


_NO_BODY = BodyClock(ProxySpec())  # never read from: stands in when there is no body


class ClientBodyError(Exception):
    """The client's request body could not be read (timeout, reset, bad chunking)."""


async def _read_small_body(request: web.BaseRequest, size: int, clock: BodyClock) -> bytes:
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
    cap: int | None,
    clock: BodyClock,
    exchange: Exchange,
) -> AsyncIterator[bytes]:
    """The request body for the upstream: the buffered prefix, then the rest as it arrives,
    counted against ``cap``."""
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
            exchange.flag = "DC"
            raise ClientBodyError from exc
        if not chunk:
            return
        sent += len(chunk)
        exchange.bytes_received = sent
        if cap is not None and sent > cap:
            raise BodyTooLarge
        yield chunk


async def _send_body(
    conn: UpstreamConnection,
    request: web.BaseRequest,
    prefix: bytes,
    cap: int | None,
    clock: BodyClock,
    exchange: Exchange,
    chunked: bool,
) -> None:
    """Stream the request body to the upstream, re-chunked when the client chunked it."""
    async for chunk in _body_stream(request, prefix, cap, clock, exchange):
        if chunked:
            conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            conn.write(chunk)
        await conn.drain()
    if chunked:
        conn.write(b"0\r\n\r\n")


async def _read_response_prefix(
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


def http_request_can_buffer(request: web.BaseRequest, response: HttpResponse) -> bool:
    """Whether the one-write path may be used: not for HEAD, 204 and 304, whose headers
    describe a body that is not sent."""
    return request.method != "HEAD" and response.status not in (204, 304)


class _SentResponse(web.StreamResponse):
    """A response :func:`_send_whole` already wrote: aiohttp's ``prepare`` and
    ``write_eof``, which the server calls once the handler returns, have nothing to do, and
    ``keep_alive`` tells it whether the connection stays open."""

    def __init__(self, status: int, keep_alive: bool, body_length: int) -> None:
        super().__init__(status=status)
        self._sent_keep_alive = keep_alive
        self._sent_length = body_length

    @property
    def keep_alive(self) -> bool:
        return self._sent_keep_alive

    @property
    def body_length(self) -> int:
        return self._sent_length

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


async def _send_whole(
    request: web.BaseRequest, status: int, reason: str, headers: CIMultiDict[str], body: bytes
) -> _SentResponse:
    """Write a complete response (not to HEAD, not 1xx/204/304) in one write through the
    request's own writer, with the framing aiohttp's ``StreamResponse.prepare`` would add:
    ``Content-Length``, ``Date`` and ``Content-Type`` when missing, ``Connection`` when the
    client's keep-alive differs from its version's default. Skipping that general machinery
    is a tenth of the per-request cost of a pass-through. ``headers`` is modified."""
    keep_alive = request.keep_alive
    version = request.version
    if "content-length" not in headers:
        headers["content-length"] = str(len(body))
    if body and "content-type" not in headers:
        headers["content-type"] = "application/octet-stream"  # as aiohttp does
    if "date" not in headers:
        headers["date"] = _http_date()
    if not keep_alive and version >= (1, 1):
        headers["connection"] = "close"
    elif keep_alive and version < (1, 1):
        headers["connection"] = "keep-alive"
    phrase = reason or _REASONS.get(status, "")
    writer = request.writer
    # The C serializer refuses CR/LF in names and values (no response splitting).
    await writer.write_headers(f"HTTP/{version[0]}.{version[1]} {status} {phrase}", headers)
    await writer.write_eof(body)
    return _SentResponse(status, keep_alive, len(body))


_REASONS = {s.value: s.phrase for s in http.HTTPStatus}
_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The IMF-fixdate of now, formatted once per second."""
    global _date_cache  # noqa: PLW0603 - a per-process cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


def _abort(request: web.BaseRequest) -> None:
    if request.transport is not None:
        request.transport.abort()
