"""One listener, both protocols: a connection is HTTP/2 when TLS negotiated ALPN ``h2`` or,
in clear text, when it opens with the HTTP/2 connection preface (prior knowledge, h2c);
otherwise it goes to aiohttp's HTTP/1.1 handler unchanged.

The TLS listener (built elsewhere) needs only two things from here: offer
:data:`ALPN_PROTOCOLS` on its ``SSLContext`` (``ctx.set_alpn_protocols(ALPN_PROTOCOLS)``)
and serve connections through :class:`DetectingServer`, whose protocol reads the
negotiated ALPN after the handshake (:func:`protocol_for_alpn`)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Literal

from aiohttp import web

from wardgate.observability import metrics
from wardgate.proxy.h2.connection import H2ServerConnection, StreamHandler
from wardgate.proxy.h2.guard import GuardedH2Connection
from wardgate.proxy.h2.overflow import PREFACE, OverflowSelector
from wardgate.proxy.h2.settings import H2Settings

ALPN_PROTOCOLS = ["h2", "http/1.1"]
"""What a TLS listener offers, preferred first (as Envoy's default ``alpn_protocols``)."""

FIRST_BYTES_TIMEOUT = 60.0
"""A connection that sends nothing that decides its protocol for this long is closed
(silently, as for a request head that never came)."""


def protocol_for_alpn(alpn: str | None) -> Literal["h2", "http/1.1"] | None:
    """The protocol to serve for a negotiated ALPN id: ``h2``, ``http/1.1``, or ``None``
    when nothing was negotiated (then the first bytes decide: prior knowledge)."""
    if alpn == "h2":
        return "h2"
    if alpn in ("http/1.1", "http/1.0"):
        return "http/1.1"
    return None


class ProtocolSelector(asyncio.Protocol):
    """The protocol of a new connection until its protocol is known; then it hands the
    transport (and the bytes read so far) to the chosen protocol and steps aside
    (``transport.set_protocol``: later callbacks go straight there)."""

    def __init__(
        self,
        http1: Callable[[], asyncio.Protocol],
        http2: Callable[[], asyncio.Protocol],
        timeout: float = 60.0,
        pending: set[ProtocolSelector] | None = None,
    ) -> None:
        self._http1 = http1
        self._http2 = http2
        self._timeout = timeout
        # Where the server counts connections whose protocol is not known yet: they hold a
        # descriptor, so they count against the connection cap like any other.
        self._pending = pending
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.selected: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if self._pending is not None:
            self._pending.add(self)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            chosen = protocol_for_alpn(ssl_object.selected_alpn_protocol())
            if chosen is not None:
                self._select(self._http2() if chosen == "h2" else self._http1(), b"")
                return
        self._timer = asyncio.get_running_loop().call_later(self._timeout, self._expired)

    def data_received(self, data: bytes) -> None:
        if self.selected is not None:  # only when set_protocol is not honoured
            self.selected.data_received(data)
            return
        buffer = self._buffer + data
        size = min(len(buffer), len(PREFACE))
        if buffer[:size] != PREFACE[:size]:
            self._select(self._http1(), buffer)
        elif size == len(PREFACE):
            self._select(self._http2(), buffer)
        else:
            self._buffer = buffer  # a prefix of the preface: wait for more

    def eof_received(self) -> bool | None:
        if self.selected is not None:
            return self.selected.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self._settled()
        if self.selected is not None:
            self.selected.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.selected is not None:
            self.selected.pause_writing()

    def resume_writing(self) -> None:
        if self.selected is not None:
            self.selected.resume_writing()

    def _select(self, protocol: asyncio.Protocol, data: bytes) -> None:
        self._stop_timer()
        self._settled()
        self._buffer = b""
        transport = self._transport
        assert transport is not None
        self.selected = protocol
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if data and not transport.is_closing():
            protocol.data_received(data)

    def _expired(self) -> None:
        self._timer = None
        if self.selected is None and self._transport is not None:
            self._transport.close()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _settled(self) -> None:
        if self._pending is not None:
            self._pending.discard(self)


class DetectingServer(web.Server):
    """aiohttp's low-level server whose connections start with a :class:`ProtocolSelector`:
    HTTP/1.1 connections get the protocol the next server class in the MRO makes
    (aiohttp's own handler, or the guarded one of ``wardgate.proxy.downstream``: nothing
    changes for them), HTTP/2 connections an :class:`H2ServerConnection` running
    ``stream_handler`` per stream. Graceful shutdown covers both kinds.

    Admission is shared: :meth:`open_connections` counts HTTP/1.1, HTTP/2 and
    not-yet-detected connections alike (one each, however many streams an HTTP/2 one
    carries), so the guarded server's connection cap holds for all of them, and an HTTP/2
    connection without streams is idle, closable to make room like an idle keep-alive
    one."""

    def __init__(
        self,
        handler: Any,
        *,
        stream_handler: StreamHandler,
        h2_settings: H2Settings,
        **kwargs: Any,
    ) -> None:
        # Cooperative: in front of another web.Server subclass (the guarded proxy server)
        # the remaining keyword arguments are its own.
        super().__init__(handler, **kwargs)
        self.stream_handler = stream_handler
        self.h2_settings = h2_settings
        self.h2_connections: set[H2ServerConnection] = set()
        self.undetected: set[ProtocolSelector] = set()
        self.h2_idle: OrderedDict[H2ServerConnection, None] = OrderedDict()

    def _new_h2(self) -> asyncio.Protocol:
        return GuardedH2Connection(
            self.stream_handler,
            self.h2_settings,
            self.h2_connections,
            self.first_bytes_timeout,
            self.h2_idle,
        )

    def __call__(self) -> asyncio.Protocol:  # type: ignore[override]
        # The HTTP/1.1 protocol is made at accept time, so that the server's own admission
        # (the connection cap) decides before any byte is read; it only starts if the
        # connection turns out to be HTTP/1.1.
        http1 = super().__call__()
        if not isinstance(http1, web.RequestHandler):
            # Over the connection cap: refused in the client's own protocol.
            return OverflowSelector(http1)
        return ProtocolSelector(
            lambda: http1, self._new_h2, self.first_bytes_timeout(), self.undetected
        )

    def open_connections(self) -> int:
        """Client connections open now, of either protocol or not yet detected."""
        return len(self._connections) + len(self.h2_connections) + len(self.undetected)

    def _close_an_idle_one(self) -> bool:
        """Make room at the cap: an idle HTTP/1.1 keep-alive connection first (the next
        server class's choice, longest idle), else the longest-idle HTTP/2 connection
        without streams, closed gracefully (``GOAWAY(NO_ERROR)``: its client reconnects
        when it needs to). Each entry is taken at most once per idle period: amortised
        O(1)."""
        closer = getattr(super(), "_close_an_idle_one", None)
        if closer is not None and closer():
            return True
        while self.h2_idle:
            conn, _ = self.h2_idle.popitem(last=False)
            if not conn.streams and not conn.closing and conn.transport is not None:
                metrics.DOWNSTREAM_CX_IDLE_CLOSED.inc()
                conn.start_shutdown()
                return True
        return False

    def first_bytes_timeout(self) -> float:
        """Seconds a new connection has to show its protocol, and an HTTP/2 client to
        finish a request head it started (overridden by the proxy listener with the
        policy's request-header timeout)."""
        return FIRST_BYTES_TIMEOUT

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        for conn in list(self.h2_connections):
            conn.start_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await asyncio.gather(
            super().shutdown(timeout),
            *(conn.shutdown(timeout) for conn in list(self.h2_connections)),
        )
