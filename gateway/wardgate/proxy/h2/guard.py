"""The listener's time limit on HTTP/2 request heads: the HTTP/2 side of
``proxy.timeouts.requestHeaders`` (the HTTP/1.1 side is in :mod:`wardgate.proxy.downstream`).

A request head on HTTP/2 is a HEADERS frame and its CONTINUATION frames. Once its first
byte has arrived, the whole block must arrive within the timeout; otherwise the connection
is closed with ``GOAWAY(NO_ERROR)`` naming the last stream the gateway accepted, so the
client knows the unfinished request was never processed and may retry it elsewhere.

Why the connection and not the stream: while a header block is open, RFC 9113 section 6.10
allows no other frame on the whole connection, and the HPACK state cannot be recovered
without decoding the block. A client that stalls there (the HTTP/2 form of slowloris) has
stalled every stream of its connection, so there is nothing left to keep open. An open
connection without streams is not a stalled head: it is governed by the HTTP/2 idle
timeout, as Envoy's is."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

import h2.errors
from hyperframe.frame import ContinuationFrame, HeadersFrame

from wardgate.observability import metrics
from wardgate.proxy.h2.connection import H2ServerConnection, StreamHandler
from wardgate.proxy.h2.settings import H2Settings

_HEAD_FRAME_TYPES = frozenset({HeadersFrame.type, ContinuationFrame.type})
_FRAME_HEADER_BYTES = 9


class GuardedH2Connection(H2ServerConnection):
    """An :class:`H2ServerConnection` of the proxy listener: its request heads are timed
    (``head_timeout`` is read each time a head starts, so a policy reload applies to the
    next head), it counts in ``wardgate_downstream_cx_active`` like an HTTP/1.1 one, and
    while it has no stream it is listed in ``idle`` (the server's, oldest first)."""

    def __init__(
        self,
        handler: StreamHandler,
        settings: H2Settings,
        registry: set[H2ServerConnection] | None,
        head_timeout: Callable[[], float],
        idle: OrderedDict[H2ServerConnection, None] | None = None,
    ) -> None:
        self._idle = idle  # set before super().__init__: the idle timer hooks use it
        super().__init__(handler, settings, registry)
        self._head_timeout = head_timeout
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        metrics.DOWNSTREAM_CX_ACTIVE.inc()  # a client connection like an HTTP/1.1 one

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.abandoned or self.transport is None or self.transport.is_closing():
            self._disarm()
        elif self.head_pending():
            if self._head_timer is None:
                self._head_timer = asyncio.get_running_loop().call_later(
                    self._head_timeout(), self._head_timed_out
                )
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        metrics.DOWNSTREAM_CX_ACTIVE.dec()
        super().connection_lost(exc)

    # The idle timer runs exactly while the connection has no stream: it is idle then, and
    # listed (longest idle first) where the server looks for room at the connection cap.

    def _arm_idle(self) -> None:
        super()._arm_idle()
        if self._idle is not None and self._idle_timer is not None:
            self._idle[self] = None
            self._idle.move_to_end(self)

    def _cancel_idle(self) -> None:
        super()._cancel_idle()
        if self._idle is not None:
            self._idle.pop(self, None)

    def head_pending(self) -> bool:
        """Whether part of a request head has arrived and the rest has not: an open header
        block (HEADERS without END_HEADERS), or a HEADERS/CONTINUATION frame (or a frame
        header too short to tell) only partly read."""
        buffer = self.h2.incoming_buffer
        if buffer._headers_buffer:
            return True
        partial = buffer._data
        if not partial:
            return False
        if len(partial) < _FRAME_HEADER_BYTES:
            return len(partial) < 4 or partial[3] in _HEAD_FRAME_TYPES
        return partial[3] in _HEAD_FRAME_TYPES

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.abandoned or not self.head_pending():
            return
        metrics.DOWNSTREAM_TIMEOUTS.labels(kind="request_headers").inc()
        self._abandon(h2.errors.ErrorCodes.NO_ERROR, "request_header_timeout")
