"""The server side of one HTTP/2 client connection: the ``h2`` state machine on the event
loop, one task per request stream, flow control both ways, and the defences Envoy has
against abusive clients (see :class:`~wardgate.proxy.h2.settings.H2Settings`).

Each request stream is handed to a *stream handler* (``async (DownstreamStream) ->
None``), the same filter chain and upstream logic for every stream. This module knows
nothing of policies or upstreams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame

from wardgate.observability import metrics
from wardgate.proxy.h2.fields import MalformedFields, check_request_head, check_trailers
from wardgate.proxy.h2.hpack_in import HeaderBlockDecoder
from wardgate.proxy.h2.hpack_out import LiteralEncoder
from wardgate.proxy.h2.settings import H2Settings
from wardgate.proxy.h2.stream import (
    DownstreamStream,
    StreamGone,
    StreamStalled,
    text,
    wire_headers,
)

__all__ = [
    "DownstreamStream",
    "H2ServerConnection",
    "StreamGone",
    "StreamHandler",
    "StreamStalled",
    "wire_headers",
]

log = logging.getLogger("wardgate.h2")

StreamHandler = Callable[[DownstreamStream], Awaitable[None]]

LINGER_SECONDS = 1.0
"""How long a connection closed for a violation stays half-open so its GOAWAY is read."""

_SETTINGS = h2.settings.SettingCodes
_ERR = h2.errors.ErrorCodes


class H2ServerConnection(asyncio.Protocol):
    """One client connection speaking HTTP/2 (after the preface or ALPN ``h2``).

    ``initial`` holds bytes already read by the protocol detector (the preface)."""

    def __init__(
        self,
        handler: StreamHandler,
        settings: H2Settings,
        registry: set[H2ServerConnection] | None = None,
    ) -> None:
        self.handler = handler
        self.settings = settings
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        self.tls = False
        self.peer = ""
        # Inbound header blocks are decoded by our own HPACK decoder and checked in one
        # pass by ``fields`` (RFC 9113 8.2/8.3) instead of h2's chain of generators;
        # outbound ones are built here already lower case and checked (``wire_headers``),
        # so h2's second pass over them is skipped. Both were a large share of the
        # per-request cost.
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.encoder = LiteralEncoder()  # type: ignore[assignment]  # see hpack_out
        self.h2.decoder = HeaderBlockDecoder()  # type: ignore[assignment]  # see hpack_in
        self.streams: dict[int, DownstreamStream] = {}
        self.closing = False
        self.abandoned = False
        self._flush_scheduled = False
        self._write_paused = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._tokens = float(settings.max_control_frames_per_second)
        self._tokens_at = time.monotonic()
        self._opened = 0
        self._premature = 0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closed = asyncio.Event()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.tls = transport.get_extra_info("sslcontext") is not None
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        if self.registry is not None:
            self.registry.add(self)
        s = self.settings
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                _SETTINGS.MAX_CONCURRENT_STREAMS: s.max_concurrent_streams,
                _SETTINGS.INITIAL_WINDOW_SIZE: s.initial_stream_window,
                _SETTINGS.MAX_FRAME_SIZE: s.max_frame_size,
                _SETTINGS.MAX_HEADER_LIST_SIZE: s.max_header_list_size,
                _SETTINGS.HEADER_TABLE_SIZE: s.header_table_size,
                _SETTINGS.ENABLE_PUSH: 0,
            },
        )
        # Applied now, not on the client's ACK: a client must not get the library's
        # larger defaults by delaying its acknowledgement.
        self.h2.decoder.max_header_list_size = s.max_header_list_size
        self.h2.decoder.max_allowed_table_size = s.header_table_size
        self.h2.max_inbound_frame_size = s.max_frame_size
        self.h2.initiate_connection()
        extra = s.initial_connection_window - 65535
        if extra > 0:
            self.h2.increment_flow_control_window(extra)
        metrics.H2_CONNECTIONS.inc()
        self._flush()
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing() or self.abandoned:
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.DenialOfServiceError:
            self._abandon(_ERR.ENHANCE_YOUR_CALM, "header_list_too_large")
            return
        except h2.exceptions.TooManyStreamsError:
            # Over the advertised SETTINGS_MAX_CONCURRENT_STREAMS: h2 stops before
            # decoding the header block, so the HPACK state is lost with it.
            metrics.H2_REFUSED_STREAMS.inc()
            self._abandon(_ERR.PROTOCOL_ERROR, "too_many_streams")
            return
        except h2.exceptions.ProtocolError as exc:
            code = getattr(exc, "error_code", None) or _ERR.PROTOCOL_ERROR
            self._abandon(code, "protocol_error")
            return
        for event in events:
            self._event(event)
            if self.abandoned or self.transport.is_closing():
                return  # the rest of the batch is not acted on: no new streams, no work
        self._flush()

    def eof_received(self) -> bool | None:
        return None  # close: a half-closed HTTP/2 connection carries nothing more

    def connection_lost(self, exc: Exception | None) -> None:
        if self.registry is not None:
            self.registry.discard(self)
        self._cancel_idle()
        for stream in self.streams.values():
            stream._lost()
            if stream.task is not None and not stream.task.done():
                stream.task.cancel()
        self._drained.set()
        self._closed.set()
        metrics.H2_CONNECTIONS.dec()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._drained.clear()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._drained.set()

    # -- events ---------------------------------------------------------------------------

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            length = event.flow_controlled_length or 0
            if stream is not None and not stream.gone:
                if not event.data and not event.stream_ended:
                    self._control_frame()  # an empty DATA frame does nothing useful
                stream._feed(event.data or b"", length)
            else:
                self._consumed(event.stream_id or 0, length)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream._end()
        elif isinstance(event, h2.events.TrailersReceived):
            try:
                check_trailers(event.headers or ())
            except MalformedFields as exc:
                self._malformed(exc)
                return
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.trailers = [(n.decode("latin-1"), text(v)) for n, v in event.headers or ()]
        elif isinstance(event, h2.events.StreamReset):
            self._peer_reset(event.stream_id)
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream._window.set()
            else:
                self._open_windows()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._control_frame()
            self._open_windows()
        elif isinstance(event, h2.events.PingReceived | h2.events.PriorityUpdated):
            self._control_frame()
        elif isinstance(event, h2.events.ConnectionTerminated):
            # h2 accepts nothing more on this connection once the client said GOAWAY.
            self.closing = True
            if self.transport is not None:
                self.transport.close()

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        assert stream_id is not None
        try:
            check_request_head(event.headers or ())
        except MalformedFields as exc:
            self._malformed(exc)
            return
        self._cancel_idle()
        if self.closing or len(self.streams) >= self.settings.max_concurrent_streams:
            # Also counts streams the client reset whose work is still being cancelled:
            # a rapid-reset client cannot make the gateway work on more than the limit.
            metrics.H2_REFUSED_STREAMS.inc()
            self._reset(stream_id, _ERR.REFUSED_STREAM)
            # A refused stream counts as one that ended early: a client that keeps
            # opening streams faster than its resets are worked off is treated as one
            # that resets them (the ratio judged in ``_judge_resets``).
            self._opened += 1
            self._premature += 1
            self._judge_resets()
            return
        self._opened += 1
        stream = DownstreamStream(self, stream_id, list(event.headers or ()))
        if event.stream_ended is not None:
            stream.body_ended = True
        self.streams[stream_id] = stream
        task = asyncio.get_running_loop().create_task(self._run(stream))
        stream.task = task

    async def _run(self, stream: DownstreamStream) -> None:
        try:
            await self.handler(stream)
            if not stream.response_ended:
                stream.reset(_ERR.INTERNAL_ERROR)
            elif not stream.body_ended and not stream.gone:
                # Answered before the client finished its body: stop the upload without
                # failing the response (RFC 9113 8.1).
                stream.reset(_ERR.NO_ERROR)
        except asyncio.CancelledError:
            stream.reset(_ERR.CANCEL)
        except Exception as exc:
            log.error("HTTP/2 stream failed", extra={"wardgate": {"error": type(exc).__name__}})
            stream.reset(_ERR.INTERNAL_ERROR)
        finally:
            self.streams.pop(stream.stream_id, None)
            # Body bytes never read still hold connection window: give it back.
            for _data, length in stream._chunks:
                self._consumed(stream.stream_id, length)
            stream._chunks.clear()
            self._flush()
            if not self.streams:
                self._close_if_idle()
                self._arm_idle()

    def _malformed(self, exc: MalformedFields) -> None:
        """A malformed request head or trailers (RFC 9113 8.1.1): nothing of it reaches
        the upstream; the connection is closed with ``PROTOCOL_ERROR``."""
        log.info("malformed HTTP/2 header block", extra={"wardgate": {"error": str(exc)}})
        self._abandon(_ERR.PROTOCOL_ERROR, "protocol_error")

    def _peer_reset(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        lifetime = time.monotonic() - stream.opened_at
        if not stream.response_ended and lifetime < self.settings.premature_reset_max_lifetime:
            # Reset before its response and soon after it opened: a cancelled call that
            # ran for a while (a gRPC deadline) is not what rapid reset looks like.
            self._premature += 1
            metrics.H2_PREMATURE_RESETS.inc()
        stream._lost()
        if stream.task is not None and not stream.task.done():
            stream.task.cancel()
        self._judge_resets()

    def _judge_resets(self) -> None:
        s = self.settings
        if self._opened >= s.premature_reset_min_streams and (
            self._premature > self._opened * s.premature_reset_ratio
        ):
            self._abandon(_ERR.ENHANCE_YOUR_CALM, "premature_resets")

    def _control_frame(self) -> None:
        """Spend one token of the control-frame budget (a token bucket refilled at
        ``max_control_frames_per_second``)."""
        now = time.monotonic()
        rate = self.settings.max_control_frames_per_second
        self._tokens = min(float(rate), self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        self._tokens -= 1
        if self._tokens < 0:
            self._abandon(_ERR.ENHANCE_YOUR_CALM, "control_frame_flood")

    def _open_windows(self) -> None:
        for stream in self.streams.values():
            stream._window.set()

    # -- output ---------------------------------------------------------------------------

    def _flush(self) -> None:
        """Send what ``h2`` queued, once per event-loop turn: the frames of every stream
        that progressed in this turn (headers, data, trailers, window updates) leave in
        one write instead of one system call each."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        transport = self.transport
        if transport is None or transport.is_closing() or self.abandoned:
            return
        data = self.h2.data_to_send()
        if data:
            transport.write(data)
            if transport.get_write_buffer_size() > self.settings.max_outbound_buffer:
                # A client that reads nothing while making the gateway answer (pings,
                # settings, resets) cannot make it queue without bound.
                metrics.H2_CONNECTIONS_ABANDONED.labels(reason="outbound_buffer").inc()
                transport.abort()

    async def _writable(self, idle: float) -> None:
        if self._write_paused:
            try:
                async with asyncio.timeout(idle):
                    await self._drained.wait()
            except TimeoutError:
                raise StreamStalled from None
        if self.transport is None or self.transport.is_closing():
            raise StreamGone

    def _consumed(self, stream_id: int, length: int) -> None:
        if length <= 0 or self.transport is None or self.transport.is_closing():
            return
        try:
            self.h2.acknowledge_received_data(length, stream_id)
        except h2.exceptions.ProtocolError:
            return  # the stream is gone: h2 still credits the connection window
        self._flush()

    def _reset(self, stream_id: int, code: int) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except h2.exceptions.ProtocolError:
            return  # already closed
        self._flush()

    def _abandon(self, code: int, reason: str) -> None:
        """Close the connection on a protocol violation or an attack: ``GOAWAY`` with
        ``code``, then close (streams in flight are cancelled). Once per connection."""
        if self.abandoned:
            return
        self.closing = True
        metrics.H2_CONNECTIONS_ABANDONED.labels(reason=reason).inc()
        log.warning(
            "HTTP/2 connection closed", extra={"wardgate": {"reason": reason, "peer": self.peer}}
        )
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(error_code=code)
        self._flush_now()
        self._linger_close()

    def _linger_close(self) -> None:
        """Close so that the GOAWAY arrives: closing a socket with unread input makes the
        kernel send a reset, which can destroy the GOAWAY before the peer reads it. So:
        stop reading into ``h2``, send FIN after the queued bytes, close a moment later."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.abandoned:
            return
        self.abandoned = True
        for stream in self.streams.values():
            stream._lost()
            if stream.task is not None and not stream.task.done():
                stream.task.cancel()
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.abort)
        else:
            transport.close()

    # -- lifecycle ------------------------------------------------------------------------

    def _arm_idle(self) -> None:
        self._cancel_idle()
        if self.transport is not None and not self.transport.is_closing():
            self._idle_timer = asyncio.get_running_loop().call_later(
                self.settings.connection_idle_timeout, self._idle_expired
            )

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_expired(self) -> None:
        self._idle_timer = None
        if not self.streams:
            self.start_shutdown()

    def _close_if_idle(self) -> None:
        if self.abandoned:
            return  # closing on the linger timer, so that the GOAWAY is read first
        if self.closing and not self.streams and self.transport is not None:
            self._flush_now()
            self.transport.close()

    def start_shutdown(self) -> None:
        """Graceful close: ``GOAWAY(NO_ERROR)`` naming the last stream accepted; streams in
        flight finish, then the connection closes."""
        if self.closing:
            return
        self.closing = True
        self._flush_now()
        if self.transport is not None and not self.transport.is_closing():
            # Written beside the state machine, not through it: h2 treats a connection
            # that sent GOAWAY as closed and would refuse the frames of streams in flight.
            frame = hyperframe.frame.GoAwayFrame(0)
            frame.last_stream_id = self.h2.highest_inbound_stream_id
            frame.error_code = _ERR.NO_ERROR
            self.transport.write(frame.serialize())
        self._close_if_idle()

    async def shutdown(self, timeout: float | None) -> None:  # noqa: ASYNC109 - aiohttp's
        """Graceful close, waiting up to ``timeout`` for streams in flight."""
        self.start_shutdown()
        try:
            async with asyncio.timeout(timeout):
                await self._closed.wait()
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()
