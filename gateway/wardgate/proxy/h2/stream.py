"""One request stream of an HTTP/2 client connection as the gateway sees it: the request
head, the body as it arrives (flow-control credit returned as it is consumed) and the
response going back, written through the connection's ``h2`` state machine."""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Protocol

import h2.connection
import h2.errors
import h2.exceptions

from wardgate.filters.identity import PeerIdentity
from wardgate.proxy.tls import peer_of


class StreamOwner(Protocol):
    """What a stream needs of its connection
    (:class:`~wardgate.proxy.h2.connection.H2ServerConnection`)."""

    h2: h2.connection.H2Connection
    tls: bool
    peer: str
    transport: asyncio.Transport | None

    def _consumed(self, stream_id: int, length: int) -> None: ...
    def _flush(self) -> None: ...
    async def _writable(self, idle: float) -> None: ...
    def _reset(self, stream_id: int, code: int) -> None: ...


_ERR = h2.errors.ErrorCodes


class StreamGone(Exception):
    """The client reset the stream, or the connection is gone."""


class StreamStalled(Exception):
    """The client gave no flow-control window (or did not read) for the idle timeout."""


def text(value: bytes) -> str:
    """A header value as text, byte for byte (``surrogateescape`` keeps non-UTF-8)."""
    return value.decode("utf-8", "surrogateescape")


def wire_headers(headers: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Header fields as bytes for ``h2``: names lower case (HTTP/2 requires it), values
    byte for byte as received (``surrogateescape`` round-trips non-UTF-8 bytes)."""
    return [
        (name.lower().encode("latin-1"), value.encode("utf-8", "surrogateescape"))
        for name, value in headers
    ]


class DownstreamStream:
    """One request stream from the client: its head, its body as it arrives (flow
    control credit is returned only as the body is consumed, so the window bounds the
    memory a stream can use), and the response going back."""

    def __init__(self, conn: StreamOwner, stream_id: int, raw: list[tuple[bytes, bytes]]) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.method = ""
        self.path = ""
        self.authority = ""
        self.scheme = ""
        self.protocol = ""
        self.headers: list[tuple[str, str]] = []
        for name, value in raw:
            if name[:1] == b":":
                pseudo = name.decode("latin-1")
                if pseudo == ":method":
                    self.method = text(value)
                elif pseudo == ":path":
                    self.path = text(value)
                elif pseudo == ":authority":
                    self.authority = text(value)
                elif pseudo == ":scheme":
                    self.scheme = text(value)
                elif pseudo == ":protocol":
                    self.protocol = text(value)
            else:
                self.headers.append((name.decode("latin-1"), text(value)))
        self.trailers: list[tuple[str, str]] = []
        self.body_ended = False
        self.gone = False
        self.response_started = False
        self.response_ended = False
        self.bytes_received = 0
        self.opened_at = time.monotonic()
        self._chunks: collections.deque[tuple[bytes, int]] = collections.deque()
        self._readable: asyncio.Future[None] | None = None
        self._window = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    # -- fed by the connection ------------------------------------------------------------

    def _feed(self, data: bytes, flow_length: int) -> None:
        self._chunks.append((data, flow_length))
        self.bytes_received += len(data)
        self._wake()

    def _end(self) -> None:
        self.body_ended = True
        self._wake()

    def _lost(self) -> None:
        self.gone = True
        self._wake()
        self._window.set()

    def _wake(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    # -- the request body -----------------------------------------------------------------

    @property
    def has_body(self) -> bool:
        return bool(self._chunks) or not self.body_ended

    @property
    def complete_body_bytes(self) -> int | None:
        """Bytes of the body not yet read when all of it has arrived, else ``None``."""
        if not self.body_ended or self.gone:
            return None
        return sum(len(data) for data, _ in self._chunks)

    async def read(self, idle: float) -> bytes:
        """The next body chunk, ``b""`` at the end of the body. :class:`StreamGone` when the
        client reset the stream, :class:`TimeoutError` after ``idle`` seconds of silence."""
        while not self._chunks:
            if self.gone:
                raise StreamGone
            if self.body_ended:
                return b""
            self._readable = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(idle):
                    await self._readable
            finally:
                self._readable = None
        data, flow_length = self._chunks.popleft()
        self.conn._consumed(self.stream_id, flow_length)
        return data

    # -- the response ---------------------------------------------------------------------

    version = "HTTP/2"

    @property
    def tls(self) -> bool:
        return self.conn.tls

    @property
    def peer(self) -> str:
        return self.conn.peer

    @property
    def peer_identity(self) -> PeerIdentity | None:
        """The verified client certificate's identity (mutual TLS), else ``None``."""
        return peer_of(self.conn.transport) if self.conn.tls else None

    async def send_headers(self, headers: list[tuple[str, str]], end_stream: bool = False) -> None:
        """Send the response head (``:status`` first) or, after data, the trailers."""
        if self.gone:
            raise StreamGone
        self.response_started = True
        try:
            self.conn.h2.send_headers(self.stream_id, wire_headers(headers), end_stream=end_stream)
        except h2.exceptions.StreamClosedError:
            self._lost()
            raise StreamGone from None
        if end_stream:
            self.response_ended = True
        self.conn._flush()

    async def send_data(self, data: bytes, idle: float, end_stream: bool = False) -> None:
        """Send body bytes as the client's flow-control window and the socket allow.
        :class:`StreamStalled` when neither moves for ``idle`` seconds (zero-window
        stall: the stream is reset, the memory it held is released)."""
        conn = self.conn
        view = memoryview(data)
        while True:
            if self.gone:
                raise StreamGone
            await conn._writable(idle)
            try:
                window = conn.h2.local_flow_control_window(self.stream_id)
            except h2.exceptions.StreamClosedError:
                self._lost()
                raise StreamGone from None
            size = min(window, conn.h2.max_outbound_frame_size, len(view))
            if size <= 0 and view:
                self._window.clear()
                try:
                    async with asyncio.timeout(idle):
                        await self._window.wait()
                except TimeoutError:
                    raise StreamStalled from None
                continue
            last = size == len(view)
            try:
                conn.h2.send_data(
                    self.stream_id, bytes(view[:size]), end_stream=end_stream and last
                )
            except h2.exceptions.StreamClosedError:
                self._lost()
                raise StreamGone from None
            view = view[size:]
            conn._flush()
            if last:
                break
        if end_stream:
            self.response_ended = True

    async def end(self) -> None:
        """End the response without trailers."""
        if self.gone or self.response_ended:
            return
        try:
            self.conn.h2.end_stream(self.stream_id)
        except h2.exceptions.StreamClosedError:
            self._lost()
            return
        self.response_ended = True
        self.conn._flush()

    def reset(self, code: int = _ERR.INTERNAL_ERROR) -> None:
        """Abort the stream (``RST_STREAM``): nothing honest can be sent any more."""
        if self.gone:
            return
        self.gone = True
        self.response_ended = True
        self.conn._reset(self.stream_id, code)
