"""The overload refusal (a connection over ``proxy.maxConnections``) in the protocol the
client speaks.

An HTTP/1.1 client gets the 503 (flag ``OM``) of :class:`wardgate.proxy.overload.
OverflowProtocol`. An HTTP/2 client (ALPN ``h2``, or the connection preface in clear text)
cannot read HTTP/1.1 bytes: it gets the server's SETTINGS, then its first request stream is
answered ``:status 503`` with ``grpc-status: 14`` (``UNAVAILABLE``) and ``grpc-message:
overloaded`` in one HEADERS frame, and ``GOAWAY(NO_ERROR)`` naming that stream as the last
one, so later streams are known unprocessed. A final answer on the stream matters: a
``GOAWAY`` alone (last stream 0) makes gRPC clients retry the call transparently, in a
reconnect loop against a full listener. Envoy at its connection limits closes such
connections without an answer; its overload action ``stop_accepting_requests`` answers each
request 503, as here.

Nothing of the request is decoded: frames are skipped by their 9-byte headers until the
first HEADERS frame. A client that opens no stream within :data:`OVERFLOW_LINGER_SECONDS`
gets ``GOAWAY(0, NO_ERROR)``. Deciding the protocol takes at most
:data:`PROTOCOL_WAIT_SECONDS`: clients send their first bytes at once; a silent one gets the
HTTP/1.1 answer."""

from __future__ import annotations

import asyncio
from typing import cast

import h2.errors
import hyperframe.frame

from wardgate.observability import metrics
from wardgate.proxy.h2.hpack_out import LiteralEncoder
from wardgate.proxy.overload import (
    MAX_OVERFLOW_LINGERING,
    OVERFLOW_LINGER_SECONDS,
    OverflowProtocol,
    close_after_reply,
    note_overflow,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

PROTOCOL_WAIT_SECONDS = 0.2
"""How long a refused clear-text connection may take to show its first bytes."""


_FRAME_HEADER = 9
_HEADERS = 0x1
_MAX_BUFFER = 64 * 1024
"""Bytes of frames before the first HEADERS frame that a refused client may send."""


def _goaway(last_stream_id: int) -> bytes:
    goaway = hyperframe.frame.GoAwayFrame(0)
    goaway.last_stream_id = last_stream_id
    goaway.error_code = h2.errors.ErrorCodes.NO_ERROR
    goaway.additional_data = b"overloaded"
    return goaway.serialize()


def h2_refusal(stream_id: int) -> bytes:
    """The answer to the first request stream and the ``GOAWAY`` after it."""
    block = LiteralEncoder().encode(
        [(b":status", b"503"), (b"grpc-status", b"14"), (b"grpc-message", b"overloaded")]
    )
    headers = hyperframe.frame.HeadersFrame(stream_id, block)
    headers.flags.add("END_HEADERS")
    headers.flags.add("END_STREAM")
    return headers.serialize() + _goaway(stream_id)


def first_request_stream(frames: bytes) -> int | None:
    """The stream id of the first HEADERS frame among complete ``frames``, else ``None``."""
    pos = 0
    while len(frames) - pos >= _FRAME_HEADER:
        length = int.from_bytes(frames[pos : pos + 3], "big")
        if frames[pos + 3] == _HEADERS:
            return int.from_bytes(frames[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
        pos += _FRAME_HEADER + length
    return None


class OverflowSelector(asyncio.Protocol):
    """A connection over the cap until its protocol is known: then the HTTP/1.1 refusal
    (``http1``, which answers as soon as it is made) or the HTTP/2 one."""

    def __init__(self, http1: asyncio.Protocol) -> None:
        self._http1 = http1
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None
        self._lingering = False
        self._refused = False
        self._h2 = False
        self._preface_read = False  # the client's preface, still to come after ALPN h2

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
            self._start_h2()
        elif ssl_object is not None or OverflowProtocol.lingering >= MAX_OVERFLOW_LINGERING:
            self._to_http1()  # known to be HTTP/1.1, or too many refusals waiting already
        else:
            OverflowProtocol.lingering += 1
            self._lingering = True
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(PROTOCOL_WAIT_SECONDS, self._to_http1)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # discarded: the connection is refused whatever it asks
        self._buffer += data
        if self._h2 and self._preface_read:
            self._answer_first_stream()
            return
        size = min(len(self._buffer), len(PREFACE))
        if self._buffer[:size] != PREFACE[:size]:
            if self._h2:  # ALPN h2 without the preface: nothing to answer
                self._finish(0)
            else:
                self._to_http1()
        elif size == len(PREFACE):
            self._buffer = self._buffer[size:]
            self._preface_read = True
            if self._h2:
                self._answer_first_stream()
            else:
                self._start_h2()

    def eof_received(self) -> bool:
        return False  # the client is done: close now

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        self._transport = None

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lingering:
            OverflowProtocol.lingering -= 1
            self._lingering = False

    def _to_http1(self) -> None:
        self._timer = None
        transport = self._transport
        if self._refused or transport is None or transport.is_closing():
            return
        self._stop()
        self._refused = True
        transport.set_protocol(self._http1)
        self._http1.connection_made(transport)

    def _start_h2(self) -> None:
        """Counted as refused now; our SETTINGS first, as the protocol requires."""
        transport = self._transport
        if self._h2 or transport is None or transport.is_closing():
            return
        self._stop()
        self._h2 = True
        metrics.DOWNSTREAM_CX_OVERFLOW.inc()
        note_overflow()
        transport.write(hyperframe.frame.SettingsFrame(0).serialize())
        if OverflowProtocol.lingering >= MAX_OVERFLOW_LINGERING:
            # A flood of refusals: no waiting for the first stream (refusals must never
            # eat the descriptor reserve); GOAWAY and close at once.
            self._refused = True
            transport.write(_goaway(0))
            transport.close()
            return
        OverflowProtocol.lingering += 1
        self._lingering = True
        self._timer = asyncio.get_running_loop().call_later(
            OVERFLOW_LINGER_SECONDS, self._finish, 0
        )
        self._answer_first_stream()

    def _answer_first_stream(self) -> None:
        stream_id = first_request_stream(self._buffer)
        if stream_id is not None:
            self._finish(stream_id)
        elif len(self._buffer) > _MAX_BUFFER:
            self._finish(0)

    def _finish(self, stream_id: int) -> None:
        """Answer ``stream_id`` (0: none opened), send ``GOAWAY``, close after a linger so
        that it is read (closing with unread input sends a reset)."""
        transport = self._transport
        if self._refused or transport is None or transport.is_closing():
            return
        self._refused = True
        self._buffer = b""
        transport.write(h2_refusal(stream_id) if stream_id else _goaway(0))
        if self._timer is not None:
            self._timer.cancel()
        self._timer = close_after_reply(transport, OVERFLOW_LINGER_SECONDS, transport.close)
