"""The client side of the proxy listener: what happens before a request reaches
:class:`~wardgate.proxy.handler.ProxyHandler`.

- **Connection cap**: at ``proxy.maxConnections`` (lowered to the descriptor budget) the
  longest-idle keep-alive connection is closed to make room, as nginx does when out of
  ``worker_connections`` (holding idle connections open must not lock clients out); with
  none idle, the new connection gets a 503 and is closed (:mod:`wardgate.proxy.overload`).
- **Request-header timeout**: a request's line and headers must be complete within
  ``proxy.timeouts.requestHeaders`` of the connection's start, or of the first byte of a
  further request on a keep-alive connection; otherwise 408 and close (a silent close when
  the client sent nothing at all, as nginx does).
- **Head size ceiling**: the parser is never fed more than :data:`MAX_HEAD_BYTES` of one
  request head (aiohttp bounds each line, not their sum), so a head costs at most that.
- **Parser refusals** are answered like the policy's own limits (414 for a request line
  over the parser's ceiling, 431 for headers, 400 otherwise, problem+json with a request
  id), logged at debug level and counted in ``wardgate_downstream_protocol_errors_total``
  instead of one ERROR line with a traceback each: malformed requests are the internet's
  background noise, not a gateway fault."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from wardgate.filters.api import LocalReply, Violation
from wardgate.observability import metrics
from wardgate.observability.response_flags import ResponseFlag
from wardgate.proxy.overload import (
    OverflowProtocol,
    close_after_reply,
    effective_limit,
    local_reply_bytes,
)
from wardgate.runtime import PolicyHolder

log = logging.getLogger("wardgate.proxy")

MAX_HEAD_BYTES = 128 * 1024
"""Ceiling for one request head on the wire: the policy allows at most 60 KiB of request
target and 60 KiB of headers, so no head it could accept is larger."""


LINGER_SECONDS = 1.0
"""How long a connection refused before its head completed stays half-open (Envoy's
``delayed_close_timeout`` default)."""


class ProxyServer(web.Server):
    """aiohttp's low-level server with the cap and the guarded connection class. The
    policy is read on every accept, so a reload changes the limits for new connections."""

    def __init__(self, handler: Any, holder: PolicyHolder, fd_budget: int, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.holder = holder
        self.fd_budget = fd_budget
        # Keep-alive connections that finished a request, oldest first (may hold some that
        # became busy since: checked when taken).
        self.idle: OrderedDict[ClientConnection, None] = OrderedDict()

    @property
    def max_connections(self) -> int:
        return effective_limit(self.holder.current.proxy.max_connections, self.fd_budget)

    def open_connections(self) -> int:
        """Client connections counted against the cap (the listener adds its HTTP/2 and
        not-yet-detected ones: :class:`~wardgate.proxy.h2.detect.DetectingServer`)."""
        return len(self._connections)

    def __call__(self) -> Any:  # a RequestHandler, or the refusal protocol over the cap
        if self.open_connections() >= self.max_connections and not self._close_an_idle_one():
            return OverflowProtocol()
        return ClientConnection(self, loop=self._loop, **self._kwargs)

    def _close_an_idle_one(self) -> bool:
        """Close the longest-idle keep-alive connection; ``False`` when none is idle. Each
        entry is taken at most once per request it served, so this is amortised O(1)."""
        while self.idle:
            conn, _ = self.idle.popitem(last=False)
            if conn.is_idle:
                metrics.DOWNSTREAM_CX_IDLE_CLOSED.inc()
                conn.force_close()
                return True
        return False


class ClientConnection(RequestHandler):
    """aiohttp's per-connection protocol plus the request-header timer and head ceiling.

    The timer runs while the parser is between requests: armed at the connection's start
    and at the first byte after a request's body is complete; disarmed when the parser
    produces the next request (or its refusal). Arming and disarming only move the
    deadline: one loop timer per connection fires at the earliest deadline set and is
    re-armed then for a later one, instead of a timer created and cancelled per request."""

    def __init__(self, manager: ProxyServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._server = manager
        self._holder = manager.holder
        self._head_deadline: float | None = None  # the pending head's (loop time), if any
        self._head_timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when _head_timer fires
        self._head_room = MAX_HEAD_BYTES
        self._head_seen = False  # bytes of the pending head arrived (408, not a silent close)
        self._last_payload: StreamReader | None = None
        self._counted = False
        self._client: tuple[str, str] | None = None
        self._linger_timer: asyncio.TimerHandle | None = None  # set once a refusal closes

    def client(self) -> tuple[str, str]:
        """The peer's address and the scheme (``http``/``https``) of this connection, read
        from the transport once (two transport calls per request otherwise)."""
        if self._client is None:
            transport = self.transport
            peer = transport.get_extra_info("peername") if transport else None
            tls = transport is not None and transport.get_extra_info("sslcontext") is not None
            self._client = (peer[0] if peer else "", "https" if tls else "http")
        return self._client

    # -- connection lifecycle -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        metrics.DOWNSTREAM_CX_ACTIVE.inc()
        self._counted = True
        self._arm_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm_head_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._server.idle.pop(self, None)
        if self._counted:
            self._counted = False
            metrics.DOWNSTREAM_CX_ACTIVE.dec()
        super().connection_lost(exc)

    async def _handle_request(
        self,
        request: web.BaseRequest,
        start_time: float | None,
        request_handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            # Answered: from now on the connection may sit idle (newest at the end). Not
            # when it is already gone: connection_lost has run and would not remove it.
            if self.transport is not None:
                idle = self._server.idle
                idle[self] = None
                idle.move_to_end(self)

    @property
    def is_idle(self) -> bool:
        """Open, between requests, and nothing of a next request received."""
        return (
            self.transport is not None
            and self._current_request is None
            and not self._messages
            and self._head_deadline is None
            and self._between_requests()
        )

    def data_received(self, data: bytes) -> None:
        if self._linger_timer is not None:
            return  # refused and closing: what the client still sends is discarded
        if self._head_deadline is None:
            if not data or not self._between_requests():
                super().data_received(data)
                return
            self._arm_head_timer()
        self._head_seen = True
        if len(data) > self._head_room:
            # Feed only what the head may still take; the rest only if the head ended.
            fits, rest = data[: self._head_room], data[self._head_room :]
            self._feed_head(fits)
            if self._head_deadline is not None:
                self._refuse_head(
                    431,
                    "headers_too_large",
                    f"the request head is larger than {MAX_HEAD_BYTES // 1024} KiB",
                    malformed=True,
                )
                return
            self.data_received(rest)
            return
        self._head_room -= len(data)
        self._feed_head(data)

    def _feed_head(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:
            self._disarm_head_timer()  # a request (or the parser's refusal) is complete
            if self._messages:
                self._last_payload = self._messages[-1][1]

    def _between_requests(self) -> bool:
        """Whether the next bytes start a new request head (not a body, not a tunnel)."""
        if self._upgraded or self._payload_parser is not None or self._force_close:
            return False
        payload = self._last_payload
        return payload is None or payload.is_eof()

    # -- the request-header timer ---------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._head_room = MAX_HEAD_BYTES
        self._head_seen = False
        timeout = self._holder.current.proxy.timeouts.request_headers
        deadline = self._head_deadline = self._loop.time() + timeout
        if self._head_timer is None or self._timer_at > deadline:
            self._start_timer(deadline)

    def _start_timer(self, when: float) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._timer_at = when
        self._head_timer = self._loop.call_at(when, self._on_timer)

    def _disarm_head_timer(self) -> None:
        self._head_deadline = None

    def _on_timer(self) -> None:
        """The timer fired: time out the pending head if its deadline passed, re-arm for a
        later deadline, or stop with none pending."""
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None:
            return
        if self._loop.time() < deadline:
            self._start_timer(deadline)
            return
        self._head_deadline = None
        self._head_timed_out()

    def _head_timed_out(self) -> None:
        if self.transport is None or self._force_close:
            return
        if self._current_request is not None or self._messages:
            # A pipelined head is pending behind a request still being answered: check
            # again later rather than cut the response short.
            seen = self._head_seen
            self._arm_head_timer()
            self._head_seen = seen
            return
        metrics.DOWNSTREAM_TIMEOUTS.labels(kind="request_headers").inc()
        log.debug("request headers timed out", extra={"wardgate": {"peer": self._peer()}})
        if not self._head_seen:
            self.force_close()  # nothing asked, nothing to answer
            return
        timeout = self._holder.current.proxy.timeouts.request_headers
        self._refuse_head(
            408,
            "request_header_timeout",
            f"the request headers did not arrive within {timeout:g} s",
            malformed=False,
        )

    def _refuse_head(self, status: int, reason: str, detail: str, *, malformed: bool) -> None:
        """Answer a head the parser never completed, and close."""
        self._disarm_head_timer()
        if malformed:
            metrics.DOWNSTREAM_PROTOCOL_ERRORS.labels(kind=reason).inc()
            log.debug(
                "malformed request refused",
                extra={"wardgate": {"reason": reason, "peer": self._peer()}},
            )
        if self.transport is not None:
            reply = LocalReply(
                status,
                "gateway",
                reason,
                detail,
                response_flag=ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR,
            )
            self.transport.write(local_reply_bytes(reply, str(uuid.uuid4())))
            self._linger()
            return
        self.force_close()

    def _linger(self) -> None:
        """Close once the refusal can reach the client (:func:`close_after_reply`, after
        :data:`LINGER_SECONDS` or when the client closes first); :meth:`data_received`
        discards what the client still sends meanwhile."""
        transport = self.transport
        assert transport is not None  # only called right after a write on it
        self._linger_timer = close_after_reply(transport, LINGER_SECONDS, self.force_close)

    # -- parser refusals ------------------------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Parser refusals (:class:`HttpProcessingError`) become local replies, counted and
        logged at debug level; anything else is aiohttp's (the proxy handler itself never
        lets an exception out)."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        reply = self._parser_reply(exc)
        metrics.DOWNSTREAM_PROTOCOL_ERRORS.labels(kind=reply.reason).inc()
        log.debug(
            "malformed request refused",
            extra={
                "wardgate": {
                    "reason": reply.reason,
                    "error": type(exc).__name__,
                    "peer": self._peer(),
                }
            },
        )
        request_id = str(uuid.uuid4())
        response = web.Response(
            status=reply.status,
            body=reply.render_body(request_id),
            headers={
                "content-type": reply.content_type,
                "x-request-id": request_id,
                "server": "wardgate",
            },
        )
        response.force_close()
        return response

    def _parser_reply(self, exc: HttpProcessingError) -> LocalReply:
        if isinstance(exc, LineTooLong):
            limit = exc.args[1] if len(exc.args) > 1 else None
            if str(limit) == str(self.max_line_size):
                return _limit_reply(
                    414,
                    "url_too_long",
                    "limits.maxUrlBytes",
                    "url",
                    f"the request line is longer than {self.max_line_size} bytes",
                )
            return _limit_reply(
                431,
                "headers_too_large",
                "limits.maxRequestHeadersKb",
                "headers",
                f"a header line is longer than {self.max_field_size} bytes",
            )
        if "too many headers" in str(exc).lower():
            return _limit_reply(
                431,
                "too_many_headers",
                "limits.maxHeadersCount",
                "headers",
                f"more than {self.max_headers} header fields",
            )
        return LocalReply(
            400,
            "gateway",
            "bad_request",
            "the request is not valid HTTP/1.1",
            response_flag=ResponseFlag.DOWNSTREAM_PROTOCOL_ERROR,
        )

    def _peer(self) -> str:
        peer = self.peername
        return str(peer[0]) if isinstance(peer, tuple) else ""


def _limit_reply(status: int, reason: str, rule: str, location: str, detail: str) -> LocalReply:
    """The same reply the ``limits`` filter gives for the same fault, for a request over the
    parser's ceilings (which sit above any limit a policy can set)."""
    return LocalReply(
        status=status,
        filter="limits",
        reason=reason,
        detail=detail,
        violations=(Violation(rule, location, detail),),
    )
