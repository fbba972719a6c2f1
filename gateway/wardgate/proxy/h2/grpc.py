"""gRPC over the proxy: recognising a call, its deadline, its message framing, and local
replies as gRPC statuses (Envoy's ``Grpc::Utility::httpToGrpcStatus``)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable

from multidict import CIMultiDict

# https://github.com/grpc/grpc/blob/master/doc/statuscodes.md
OK = 0
CANCELLED = 1
UNKNOWN = 2
INTERNAL = 13
DEADLINE_EXCEEDED = 4
UNIMPLEMENTED = 12
RESOURCE_EXHAUSTED = 8
PERMISSION_DENIED = 7
UNAVAILABLE = 14
UNAUTHENTICATED = 16

_HTTP_TO_GRPC = {
    400: INTERNAL,
    401: UNAUTHENTICATED,
    403: PERMISSION_DENIED,
    404: UNIMPLEMENTED,
    405: UNIMPLEMENTED,
    413: RESOURCE_EXHAUSTED,
    414: RESOURCE_EXHAUSTED,
    429: UNAVAILABLE,
    431: RESOURCE_EXHAUSTED,
    502: UNAVAILABLE,
    503: UNAVAILABLE,
    504: UNAVAILABLE,
}

MESSAGE_HEADER_BYTES = 5
"""A gRPC message is a 1-byte compressed flag and a 4-byte big-endian length, then the
message (gRPC over HTTP/2, "Length-Prefixed-Message")."""


def is_grpc(content_type: str) -> bool:
    """Whether a request is a gRPC call: ``application/grpc`` or ``application/grpc+proto``
    and the like (``application/grpc-web`` is another protocol and is not)."""
    base = content_type.split(";", 1)[0].strip().lower()
    return base == "application/grpc" or base.startswith("application/grpc+")


def grpc_status_for(http_status: int) -> int:
    """The gRPC status a local reply of ``http_status`` is sent as: Envoy's mapping, with
    413/414/431 as RESOURCE_EXHAUSTED (a message or metadata over a limit)."""
    return _HTTP_TO_GRPC.get(http_status, UNKNOWN)


_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str | None) -> float | None:
    """Seconds of a ``grpc-timeout`` header (1 to 8 ASCII digits and a unit); ``None``
    when absent or malformed (gRPC says a malformed timeout is ignored, as grpc-go does)."""
    if not value or len(value) > 9:
        return None
    digits, unit = value[:-1], value[-1:]
    if not digits.isdigit() or not digits.isascii() or unit not in _UNITS:
        return None
    return int(digits) * _UNITS[unit]


def encode_message(text: str) -> str:
    """``grpc-message``: percent-encoded UTF-8, printable ASCII except ``%`` kept as is."""
    return urllib.parse.quote(text, safe=" !\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~")


def trailers_only(
    status: int, message: str, extra: Iterable[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """Headers of a trailers-only gRPC response (HTTP 200, no message, ``grpc-status``
    in the one HEADERS frame that ends the stream)."""
    out = [(":status", "200"), ("content-type", "application/grpc")]
    out.extend(extra)
    out.append(("grpc-status", str(status)))
    if message:
        out.append(("grpc-message", encode_message(message)))
    return out


def local_reply_headers(
    http_status: int, reason: str, detail: str, headers: CIMultiDict[str]
) -> list[tuple[str, str]]:
    """A local reply as a trailers-only gRPC response. ``headers`` are the local reply's
    headers after the response header policy (``x-request-id``, ``server``...); framing
    headers that describe the problem+json body that is not sent are left out."""
    extra = [
        (name.lower(), value)
        for name, value in headers.items()
        if name.lower() not in ("content-type", "content-length", "grpc-status", "grpc-message")
    ]
    message = f"{reason}: {detail}" if detail and detail != reason else reason
    return trailers_only(grpc_status_for(http_status), message, extra)


class MessageScanner:
    """Follows the gRPC message framing of a request body as it streams, without buffering
    messages: it only tracks where the next 5-byte message header starts. ``feed`` returns
    the declared length of the first message over ``limit`` (else ``None``), so an
    oversized message is refused before its bytes are forwarded in full."""

    __slots__ = ("_header", "_remaining", "limit", "messages")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._remaining = 0  # bytes of the current message still to come
        self._header = b""  # a message header split across chunks
        self.messages = 0

    @property
    def at_boundary(self) -> bool:
        """Whether the bytes fed so far end exactly after a whole message."""
        return self.messages > 0 and not self._remaining and not self._header

    def feed(self, chunk: bytes) -> int | None:
        pos = 0
        size = len(chunk)
        while pos < size:
            if self._remaining:
                step = min(self._remaining, size - pos)
                self._remaining -= step
                pos += step
                continue
            need = MESSAGE_HEADER_BYTES - len(self._header)
            self._header += chunk[pos : pos + need]
            pos += need
            if len(self._header) < MESSAGE_HEADER_BYTES:
                break
            length = int.from_bytes(self._header[1:5], "big")
            self._header = b""
            self.messages += 1
            if self.limit is not None and length > self.limit:
                return length
            self._remaining = length
        return None
