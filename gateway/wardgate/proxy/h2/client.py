"""The HTTP/2 (h2c, prior knowledge) client to the one upstream: few connections, many
streams on each (multiplexing), flow control both ways, trailers.

Failures are :class:`~wardgate.proxy.upstream_client.UpstreamError` with Envoy's response
flags, as for the HTTP/1.1 client: ``UH``/``UF`` when no connection can be made, ``UC``
when the upstream resets the stream or the connection ends, ``UT`` on an idle timeout."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from wardgate.observability.response_flags import ResponseFlag
from wardgate.proxy.h2.fields import (
    MalformedFields,
    check_response_head,
    check_trailers,
)
from wardgate.proxy.h2.hpack_in import HeaderBlockDecoder
from wardgate.proxy.h2.hpack_out import LiteralEncoder
from wardgate.proxy.h2.stream import wire_headers
from wardgate.proxy.upstream_client import UpstreamError

_SETTINGS = h2.settings.SettingCodes
_ERR = h2.errors.ErrorCodes

STREAM_WINDOW = 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_CONNECTIONS = 64
"""Connections opened when every existing one is at the upstream's stream limit."""


def _text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def _pairs(raw: object) -> list[tuple[str, str]]:
    return [(n.decode("latin-1"), _text(v)) for n, v in raw or ()]  # type: ignore[attr-defined]


class UpstreamStream:
    """One request/response exchange on an upstream HTTP/2 connection."""

    def __init__(self, conn: H2ClientConnection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.status = 0
        self.headers: list[tuple[str, str]] = []
        self.trailers: list[tuple[str, str]] = []
        self.head_ended = False  # the response ended with its headers (trailers-only)
        self._head: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._chunks: collections.deque[tuple[bytes, int]] = collections.deque()
        self._ended = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._window = asyncio.Event()
        self.closed = False

    # -- fed by the connection ------------------------------------------------------------

    def _response(self, raw: object, ended: bool) -> None:
        headers = _pairs(raw)
        self.status = int(next((v for n, v in headers if n == ":status"), "0"))
        self.headers = [(n, v) for n, v in headers if n[:1] != ":"]
        self.head_ended = ended
        if ended:
            self._ended = True
        if not self._head.done():
            self._head.set_result(None)

    def _feed(self, data: bytes, length: int) -> None:
        self._chunks.append((data, length))
        self._wake()

    def _end(self) -> None:
        self._ended = True
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None and not self._ended:
            self._error = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved: nobody may be waiting yet
        self.closed = True
        self._wake()
        self._window.set()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- used by the proxy ----------------------------------------------------------------

    async def send(self, data: bytes, idle: float) -> None:
        """Send request body bytes within the upstream's flow-control window."""
        conn = self.conn
        view = memoryview(data)
        while view:
            if self._error is not None or conn.closed:
                raise self._error or UpstreamError(
                    ResponseFlag.UPSTREAM_CONNECTION_TERMINATION, "connection closed"
                )
            try:
                window = conn.h2.local_flow_control_window(self.stream_id)
            except h2.exceptions.StreamClosedError:
                raise UpstreamError(
                    ResponseFlag.UPSTREAM_CONNECTION_TERMINATION, "stream closed by the upstream"
                ) from None
            size = min(window, conn.h2.max_outbound_frame_size, len(view))
            if size <= 0:
                self._window.clear()
                try:
                    async with asyncio.timeout(idle):
                        await self._window.wait()
                except TimeoutError:
                    raise UpstreamError(
                        ResponseFlag.UPSTREAM_REQUEST_TIMEOUT,
                        "no flow-control window from the upstream",
                    ) from None
                continue
            conn.h2.send_data(self.stream_id, bytes(view[:size]))
            view = view[size:]
            conn.flush()
            await conn.drain()

    def end(self, trailers: list[tuple[str, str]] | None = None) -> None:
        """End the request body, with trailers when there are any."""
        if self._error is not None or self.closed:
            return
        try:
            if trailers:
                self.conn.h2.send_headers(self.stream_id, wire_headers(trailers), end_stream=True)
            else:
                self.conn.h2.end_stream(self.stream_id)
        except h2.exceptions.StreamClosedError:
            return  # the upstream already answered and closed: its response stands
        self.conn.flush()

    async def head(self) -> None:
        """Wait for the response headers (``status``, ``headers`` are then set)."""
        await asyncio.shield(self._head)

    async def read(self, idle: float) -> bytes:
        """The next response body chunk, ``b""`` at its end (``trailers`` are then set)."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._ended:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(idle):
                    await self._waiter
            except TimeoutError:
                raise UpstreamError(
                    ResponseFlag.UPSTREAM_REQUEST_TIMEOUT, "idle timeout reading the response body"
                ) from None
            finally:
                self._waiter = None
        data, length = self._chunks.popleft()
        self.conn.consumed(self.stream_id, length)
        return data

    @property
    def complete(self) -> bool:
        return self._ended and self._error is None

    def abort(self) -> None:
        """Cancel the exchange (``RST_STREAM(CANCEL)``) unless it already ended."""
        if self.closed or self._ended:
            self.conn.forget(self)
            return
        self.closed = True
        self.conn.reset(self.stream_id)
        self.conn.forget(self)

    def release(self) -> None:
        if self._ended or self._error is not None:
            self.conn.forget(self)
        else:
            self.abort()


class H2ClientConnection(asyncio.Protocol):
    """One HTTP/2 connection to the upstream."""

    def __init__(self, pool: H2UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        # Inbound headers are decoded by our HPACK decoder and checked in one pass by
        # ``fields`` (RFC 9113 8.2/8.3: nothing malformed reaches the client); outbound
        # ones are built here already lower case and checked (``wire_headers``), so h2's
        # own passes over them, a large share of its per-request cost, are skipped.
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.encoder = LiteralEncoder()  # type: ignore[assignment]  # see hpack_out
        self.h2.decoder = HeaderBlockDecoder()  # type: ignore[assignment]  # see hpack_in
        self.streams: dict[int, UpstreamStream] = {}
        self.closed = False
        self.goaway = False
        self._flush_scheduled = False
        self._paused = False
        self._drained = asyncio.Event()
        self._drained.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                _SETTINGS.ENABLE_PUSH: 0,
                _SETTINGS.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                _SETTINGS.MAX_HEADER_LIST_SIZE: 256 * 1024,
            },
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.flush()

    def _protocol_error(self, what: str) -> None:
        """The upstream broke the protocol: every exchange on the connection fails
        (``UC``), ``GOAWAY(PROTOCOL_ERROR)``, closed."""
        self._fail_all(
            UpstreamError(
                ResponseFlag.UPSTREAM_CONNECTION_TERMINATION, f"HTTP/2 protocol error: {what}"
            )
        )
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(_ERR.PROTOCOL_ERROR)
        self._flush_now()
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._protocol_error(type(exc).__name__)
            return
        for event in events:
            stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
            if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                try:
                    check = (
                        check_response_head
                        if isinstance(event, h2.events.ResponseReceived)
                        else check_trailers
                    )
                    check(event.headers or ())
                except MalformedFields:
                    self._protocol_error("malformed response headers")
                    return
            if isinstance(event, h2.events.ResponseReceived):
                if stream is not None:
                    stream._response(event.headers, event.stream_ended is not None)
            elif isinstance(event, h2.events.DataReceived):
                length = event.flow_controlled_length or 0
                if stream is not None:
                    stream._feed(event.data or b"", length)
                else:
                    self.consumed(event.stream_id or 0, length)
            elif isinstance(event, h2.events.TrailersReceived):
                if stream is not None:
                    stream.trailers = _pairs(event.headers)
            elif isinstance(event, h2.events.StreamEnded):
                if stream is not None:
                    stream._end()
            elif isinstance(event, h2.events.StreamReset):
                if stream is not None:
                    stream._fail(
                        UpstreamError(
                            ResponseFlag.UPSTREAM_CONNECTION_TERMINATION,
                            f"upstream reset: {event.error_code!r}",
                        )
                    )
            elif isinstance(event, h2.events.WindowUpdated):
                if stream is not None:
                    stream._window.set()
                elif not event.stream_id:
                    for s in self.streams.values():
                        s._window.set()
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                for s in self.streams.values():
                    s._window.set()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = True
                last = event.last_stream_id or 0
                for sid, s in list(self.streams.items()):
                    if sid > last or event.error_code:
                        s._fail(
                            UpstreamError(
                                ResponseFlag.UPSTREAM_CONNECTION_TERMINATION, "upstream sent GOAWAY"
                            )
                        )
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_all(
            UpstreamError(ResponseFlag.UPSTREAM_CONNECTION_TERMINATION, "connection closed")
        )
        self._drained.set()
        self.pool.discard(self)

    def pause_writing(self) -> None:
        self._paused = True
        self._drained.clear()

    def resume_writing(self) -> None:
        self._paused = False
        self._drained.set()

    def _fail_all(self, error: UpstreamError) -> None:
        for stream in list(self.streams.values()):
            stream._fail(error)

    # -- used by streams and the pool -----------------------------------------------------

    @property
    def available(self) -> bool:
        limit = self.h2.remote_settings.max_concurrent_streams
        return not self.closed and not self.goaway and len(self.streams) < limit

    def open(self, headers: list[tuple[str, str]], end_stream: bool) -> UpstreamStream:
        stream_id = self.h2.get_next_available_stream_id()
        stream = UpstreamStream(self, stream_id)
        self.streams[stream_id] = stream
        self.h2.send_headers(stream_id, wire_headers(headers), end_stream=end_stream)
        self.flush()
        return stream

    def flush(self) -> None:
        """Send what ``h2`` queued, once per event-loop turn (one write for many frames)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        if self._paused:
            await self._drained.wait()
        if self.closed:
            raise UpstreamError(
                ResponseFlag.UPSTREAM_CONNECTION_TERMINATION,
                "connection closed while sending the body",
            )

    def consumed(self, stream_id: int, length: int) -> None:
        if length <= 0 or self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.acknowledge_received_data(length, stream_id)
        self.flush()

    def reset(self, stream_id: int) -> None:
        if self.closed:
            return
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.reset_stream(stream_id, _ERR.CANCEL)
        self.flush()

    def forget(self, stream: UpstreamStream) -> None:
        self.streams.pop(stream.stream_id, None)
        if self.goaway and not self.streams and self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection()
            self._flush_now()
            self.transport.close()


class H2UpstreamPool:
    """HTTP/2 connections to one ``host:port``: new streams go to the first connection
    with room under the upstream's ``SETTINGS_MAX_CONCURRENT_STREAMS``; a new connection
    is opened only when none has (one connect at a time)."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self._conns: list[H2ClientConnection] = []
        self._connecting: asyncio.Future[H2ClientConnection] | None = None

    async def open_stream(
        self, headers: list[tuple[str, str]], end_stream: bool, connect_timeout: float
    ) -> UpstreamStream:
        """Send a request head on a new stream. ``UH``/``UF`` when no connection can be
        made within ``connect_timeout``."""
        while True:
            for conn in self._conns:
                if conn.available:
                    return conn.open(headers, end_stream)
            if self._connecting is None:
                self._connecting = asyncio.ensure_future(self._connect(connect_timeout))
            connecting = self._connecting
            try:
                conn = await asyncio.shield(connecting)
            finally:
                if self._connecting is connecting and connecting.done():
                    self._connecting = None
            if conn.available:
                return conn.open(headers, end_stream)

    async def _connect(self, connect_timeout: float) -> H2ClientConnection:
        if len(self._conns) >= MAX_CONNECTIONS:
            raise UpstreamError(
                ResponseFlag.UPSTREAM_CONNECTION_FAILURE, "too many upstream HTTP/2 connections"
            )
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: H2ClientConnection(self),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                )
        except socket.gaierror as exc:
            raise UpstreamError(
                ResponseFlag.NO_HEALTHY_UPSTREAM, f"cannot resolve {self.host}: {exc.strerror}"
            ) from None
        except TimeoutError:
            raise UpstreamError(
                ResponseFlag.UPSTREAM_CONNECTION_FAILURE, "connect timeout"
            ) from None
        except OSError as exc:
            raise UpstreamError(
                ResponseFlag.UPSTREAM_CONNECTION_FAILURE, exc.strerror or type(exc).__name__
            ) from None
        self._conns.append(protocol)
        return protocol

    def discard(self, conn: H2ClientConnection) -> None:
        with contextlib.suppress(ValueError):
            self._conns.remove(conn)

    def close(self) -> None:
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()
