"""A lean HTTP/1.1 client for the one upstream.

Why not aiohttp's client: on the request path it costs several times what the rest of the
proxy costs (request objects, URL building, header merging, tracing hooks). This client
keeps a pool of keep-alive connections, writes each request head in one ``write``, parses
responses with llhttp (``httptools``, the C parser uvicorn uses) and streams bodies both
ways with flow control (reading pauses above :data:`HIGH_WATER` buffered bytes).

Failures are :class:`UpstreamError` with Envoy's response flag: ``UH`` (the name does not
resolve), ``UF`` (connection refused or connect timeout), ``UC`` (closed or reset, or an
invalid response), ``UT`` (idle timeout while reading the body).

A connection carries exactly one response per request. Bytes the upstream sends beyond the
end of that response (a second response, a body longer than its ``Content-Length``, anything
on an idle pooled connection) would otherwise be read as the *next* request's response
(response queue poisoning): they are discarded, the connection is closed and never pooled
again, and ``wardgate_upstream_protocol_errors_total`` counts it. The response that was
already whole is delivered as it was.

A response head (status line and header fields) is bounded in size and in number of fields
(Envoy's 60 KiB and 100 by default, from the policy): bytes are counted as they arrive and
the parser is never fed more than the limit, so an endless header costs at most that much
memory. Beyond it the exchange fails with ``UPE`` (502, Envoy's upstream protocol error)."""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator

import httptools
from multidict import CIMultiDict

from wardgate.observability import metrics
from wardgate.observability.response_flags import ResponseFlag

log = logging.getLogger("wardgate.upstream")

HIGH_WATER = 1024 * 1024
LOW_WATER = 256 * 1024
MAX_IDLE_CONNECTIONS = 256
IDLE_CONNECTION_SECONDS = 55.0  # below the usual 60 s server keep-alive timeouts
MAX_RESPONSE_HEAD_BYTES = 60 * 1024  # Envoy's max_response_headers_kb default
MAX_RESPONSE_HEADERS = 100  # Envoy's max_headers_count default


class UpstreamError(Exception):
    """An upstream failure; ``flag`` is Envoy's response flag for it."""

    def __init__(self, flag: ResponseFlag, detail: str = "", reason: str = "") -> None:
        self.flag = flag
        self.reason = reason
        """A more precise local-reply reason than the flag's (``tls_handshake_failed``)."""
        super().__init__(f"{flag}: {detail}" if detail else flag)


class _ExcessData(Exception):
    """Raised inside a parser callback when bytes follow the end of the expected response."""


class _HeadTooLarge(Exception):
    """Raised inside a parser callback when the response has too many header fields."""


class InvalidHeaderValue(ValueError):
    """A header value that would split the request head (CR, LF or NUL)."""


def build_head(method: str, target: str, headers: CIMultiDict[str], chunked: bool) -> bytes:
    """The request head as bytes. Refuses values that could inject a header or a request:
    filters may copy untrusted data (JWT claims) into headers."""
    parts = [f"{method} {target} HTTP/1.1\r\n"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\x00" in value:
            raise InvalidHeaderValue(name)
        parts.append(f"{name}: {value}\r\n")
    if chunked:
        parts.append("transfer-encoding: chunked\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("utf-8", "surrogateescape")


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self._parser = httptools.HttpResponseParser(self)
        self._head_request = False
        self._headers: list[tuple[str, str]] = []
        self._reason = ""
        self._headers_done: asyncio.Future[None] | None = None
        self._headers_timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when the armed timer fires (loop time)
        self._deadline: float | None = None  # when the pending response head times out
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._complete = False
        self._length_delimited = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self.keep_alive = True
        self.status = 0
        # The response head still being received, and how many more bytes it may take.
        self._head_open = False
        self._head_room = MAX_RESPONSE_HEAD_BYTES
        self._max_headers = MAX_RESPONSE_HEADERS

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self._complete or self._headers_done is None:
            self._discard_excess()  # idle in the pool, or the response is already whole
            return
        if self._head_open:
            if len(data) > self._head_room:
                self._feed_past_head_limit(data)
                return
            self._head_room -= len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(
                UpstreamError(
                    ResponseFlag.UPSTREAM_CONNECTION_TERMINATION, "unexpected protocol upgrade"
                )
            )
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._head_too_large("too many response header fields")
            elif self._complete or isinstance(exc.__context__, _ExcessData):
                self._discard_excess()
            else:
                self._fail(
                    UpstreamError(
                        ResponseFlag.UPSTREAM_CONNECTION_TERMINATION, f"invalid response: {exc}"
                    )
                )

    def _feed_past_head_limit(self, data: bytes) -> None:
        """``data`` is more than the head may still take: feed only what fits; unless the
        head ends within it, fail without buffering the rest (the body may follow in the
        same read, then it is fed normally)."""
        fits, rest = data[: self._head_room], data[self._head_room :]
        self.data_received(fits)
        if self._error is not None or self.closed:
            return
        if self._head_open:
            self._head_too_large("response headers too large")
            return
        self.data_received(rest)

    def _head_too_large(self, detail: str) -> None:
        metrics.UPSTREAM_PROTOCOL_ERRORS.labels(kind="response_headers_too_large").inc()
        self._headers = []
        self.keep_alive = False
        self._fail(UpstreamError(ResponseFlag.UPSTREAM_PROTOCOL_ERROR, detail))

    def _discard_excess(self) -> None:
        """The upstream sent more than one response: keep the whole response already
        received (if any), drop the rest and retire the connection."""
        if self.closed:
            return
        metrics.UPSTREAM_PROTOCOL_ERRORS.labels(kind="excess_data").inc()
        self.keep_alive = False
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._headers_timer is not None:  # nothing can time out on a closed connection
            self._headers_timer.cancel()
            self._headers_timer = None
        if self._headers_done is None or self._complete:
            pass  # idle, or the response was already whole
        elif self._headers_done.done():
            if not self._length_delimited:
                self._complete = True  # a body delimited by the connection's end
                self._wake()
            else:
                self._fail(
                    UpstreamError(
                        ResponseFlag.UPSTREAM_CONNECTION_TERMINATION, "connection closed mid-body"
                    )
                )
        else:
            self._fail(
                UpstreamError(
                    ResponseFlag.UPSTREAM_CONNECTION_TERMINATION,
                    "connection closed before response headers",
                )
            )
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(
                UpstreamError(ResponseFlag.UPSTREAM_CONNECTION_TERMINATION, "connection closed")
            )

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            raise _ExcessData  # a second response in the same read
        self._headers = []
        self._length_delimited = False

    def on_status(self, status: bytes) -> None:
        self._reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._headers) >= self._max_headers:
            raise _HeadTooLarge
        text = name.decode("latin-1")
        # The body's end is framed by the message, not by the connection's close (a length
        # test first: most names are neither).
        if len(name) in (14, 17) and text.lower() in ("content-length", "transfer-encoding"):
            self._length_delimited = True
        self._headers.append((text, value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return  # interim responses (103 Early Hints...) are not forwarded
        self.status = status
        self._head_open = False
        self.keep_alive = self._parser.should_keep_alive()
        if self._head_request or status in (204, 304):
            self._complete = True
            # llhttp would wait for a body announced by Content-Length: start afresh.
            self._parser = httptools.HttpResponseParser(self)
        self._deadline = None
        if self._headers_done is not None and not self._headers_done.done():
            self._headers_done.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._complete:
            raise _ExcessData  # a body after a HEAD, 204 or 304 response
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status:
            self._complete = True
            self._wake()

    # -- used by the proxy ----------------------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        self._deadline = None
        if self._error is None:
            self._error = error
        if self._headers_done is not None and not self._headers_done.done():
            _set_exception(self._headers_done, error)
        self._wake()
        if self.transport is not None:
            self.transport.close()

    def begin(
        self,
        head_request: bool,
        timeout: float | None = None,
        max_head_bytes: int = MAX_RESPONSE_HEAD_BYTES,
        max_headers: int = MAX_RESPONSE_HEADERS,
    ) -> asyncio.Future[None]:
        """Prepare for a new exchange; returns the future of the response headers. With
        ``timeout`` (seconds) the future fails with :class:`TimeoutError` when the headers
        have not arrived by then: one loop timer, cheaper than ``asyncio.timeout`` (a
        context object, a task cancellation and its undoing) on the path every request
        takes; the timer is armed once and re-armed when it fires for a later request on
        the same connection, not created and cancelled per request. A response head
        (interim 1xx heads included) over ``max_head_bytes`` bytes or ``max_headers``
        fields fails it with :class:`UpstreamError` ``UPE``."""
        self._head_open = True
        self._head_room = max_head_bytes
        self._max_headers = max_headers
        self._head_request = head_request
        self._headers = []
        self._chunks.clear()
        self._buffered = 0
        self._complete = False
        self._error = None
        self.status = 0
        loop = asyncio.get_running_loop()
        self._headers_done = loop.create_future()
        self._deadline = None if timeout is None else loop.time() + timeout
        if self._deadline is not None and (
            self._headers_timer is None or self._timer_at > self._deadline
        ):
            self._arm_timer(loop, self._deadline)
        return self._headers_done

    def _arm_timer(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
        self._timer_at = when
        self._headers_timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        """The armed time came: the pending head times out if its deadline passed; a
        later request's deadline re-arms the timer; with none pending it stops."""
        self._headers_timer = None
        deadline = self._deadline
        if deadline is None or self._headers_done is None or self._headers_done.done():
            return
        loop = asyncio.get_running_loop()
        if loop.time() < deadline:
            self._arm_timer(loop, deadline)
            return
        self._deadline = None
        _set_exception(self._headers_done, TimeoutError())

    def _stop_headers_timer(self) -> None:
        self._deadline = None
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        if self.closed:
            raise UpstreamError(
                ResponseFlag.UPSTREAM_CONNECTION_TERMINATION,
                "connection closed while sending the body",
            )
        if self._write_paused:
            self._drain_waiter = asyncio.get_running_loop().create_future()
            await self._drain_waiter

    @property
    def headers(self) -> list[tuple[str, str]]:
        return self._headers

    @property
    def reason(self) -> str:
        return self._reason

    @property
    def complete(self) -> bool:
        return self._complete and not self._chunks

    def buffered_body(self) -> bytes | None:
        """The whole body when it has already arrived (the common small response)."""
        if self._complete and self._error is None:
            body = b"".join(self._chunks)
            self._chunks.clear()
            self._buffered = 0
            return body
        return None

    async def read_chunk(self, idle_timeout: float) -> bytes:
        """The next body chunk; ``b""`` at the end of the body."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(idle_timeout):
                    await self._waiter
            except TimeoutError:
                raise UpstreamError(
                    ResponseFlag.UPSTREAM_REQUEST_TIMEOUT, "idle timeout reading the response body"
                ) from None
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered < LOW_WATER and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return chunk

    async def body(self, idle_timeout: float) -> AsyncIterator[bytes]:
        while chunk := await self.read_chunk(idle_timeout):
            yield chunk

    @property
    def reusable(self) -> bool:
        return (
            not self.closed
            and self.keep_alive
            and self._complete
            and not self._chunks
            and self._error is None
        )

    def close(self) -> None:
        self.closed = True
        self._stop_headers_timer()
        if self.transport is not None:
            self.transport.close()


_tls_logged_at = 0.0


def _log_tls_failure(host: str, port: int, detail: str) -> None:
    """Log an upstream TLS failure with OpenSSL's reason, at most once a second (every
    request fails the same way while the upstream is misconfigured)."""
    global _tls_logged_at  # noqa: PLW0603 - a per-process rate limit
    now = time.monotonic()
    if now - _tls_logged_at < 1.0:
        return
    _tls_logged_at = now
    log.error(
        "upstream TLS handshake failed; request refused (503 UF)",
        extra={"wardgate": {"upstream": f"{host}:{port}", "tls": {"error": detail[:200]}}},
    )


class UpstreamPool:
    """Keep-alive connections to one ``host:port`` (most recently used first)."""

    def __init__(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.server_hostname = server_hostname or host
        self._idle: list[UpstreamConnection] = []

    def take_idle(self) -> UpstreamConnection | None:
        """A pooled keep-alive connection still fit for use, or ``None`` (then
        :meth:`acquire` connects): the common case without a coroutine."""
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_CONNECTION_SECONDS:
                return conn
            conn.close()
        return None

    async def acquire(self, connect_timeout: float) -> UpstreamConnection:
        """A pooled connection, or a new one within ``connect_timeout`` (``UH``/``UF``)."""
        conn = self.take_idle()
        if conn is not None:
            return conn
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, protocol = await loop.create_connection(
                    UpstreamConnection,
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.server_hostname if self.tls else None,
                )
        except socket.gaierror as exc:
            raise UpstreamError(
                ResponseFlag.NO_HEALTHY_UPSTREAM, f"cannot resolve {self.host}: {exc.strerror}"
            ) from None
        except TimeoutError:
            raise UpstreamError(
                ResponseFlag.UPSTREAM_CONNECTION_FAILURE, "connect timeout"
            ) from None
        except ssl.SSLError as exc:
            # Fail closed: an upstream that cannot prove who it is gets no request.
            detail = getattr(exc, "verify_message", None) or exc.reason or type(exc).__name__
            metrics.UPSTREAM_TLS_FAILURES.inc()
            _log_tls_failure(self.host, self.port, str(detail))
            raise UpstreamError(
                ResponseFlag.UPSTREAM_CONNECTION_FAILURE, f"TLS: {detail}", "tls_handshake_failed"
            ) from None
        except OSError as exc:
            raise UpstreamError(
                ResponseFlag.UPSTREAM_CONNECTION_FAILURE, exc.strerror or type(exc).__name__
            ) from None
        return protocol

    def release(self, conn: UpstreamConnection) -> None:
        if conn.reusable and len(self._idle) < MAX_IDLE_CONNECTIONS:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


def _set_exception(future: asyncio.Future[None], error: BaseException) -> None:
    """Fail ``future`` and mark its exception as seen: its waiter may be gone (the client
    went away and the exchange was cancelled), and a failure nobody awaits must not
    surface as asyncio's "exception was never retrieved" error with a traceback. The
    awaiting side, if any, still gets it."""
    future.set_exception(error)
    future.exception()
