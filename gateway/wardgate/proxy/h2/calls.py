"""The two ends of one HTTP/2 exchange as the gateway drives them: the client's side
(:class:`Downstream`: an HTTP/2 stream, or an HTTP/1.1 request forwarded over h2c) and the
upstream's (:class:`UpstreamCall`: an h2c stream of the multiplexed pool, or
:class:`H1Call` on a pooled HTTP/1.1 connection)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from wardgate.filters.api import HttpRequest
from wardgate.filters.identity import PeerIdentity
from wardgate.proxy.upstream_client import UpstreamConnection, UpstreamPool, build_head


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
