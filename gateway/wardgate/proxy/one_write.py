"""The one-write response of the HTTP/1.1 proxy: a complete small response (status line,
headers and body) written in one go through the request's own writer, instead of
aiohttp's general ``StreamResponse`` machinery, which is a tenth of the per-request cost
of a pass-through."""

from __future__ import annotations

import email.utils
import http
import time

from aiohttp import web
from multidict import CIMultiDict

from wardgate.filters.api import HttpResponse


def can_send_whole(request: web.BaseRequest, response: HttpResponse) -> bool:
    """Whether the one-write path may be used: not for HEAD, 204 and 304, whose headers
    describe a body that is not sent."""
    return request.method != "HEAD" and response.status not in (204, 304)


class SentResponse(web.StreamResponse):
    """A response :func:`send_whole` already wrote (or one that can no longer be sent):
    aiohttp's ``prepare`` and ``write_eof``, which the server calls once the handler
    returns, have nothing to do, and ``keep_alive`` tells it whether the connection stays
    open."""

    def __init__(self, status: int, keep_alive: bool, body_length: int) -> None:
        super().__init__(status=status)
        self._sent_keep_alive = keep_alive
        self._sent_length = body_length

    @property
    def keep_alive(self) -> bool:
        return self._sent_keep_alive

    @property
    def body_length(self) -> int:
        return self._sent_length

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


async def send_whole(
    request: web.BaseRequest, status: int, reason: str, headers: CIMultiDict[str], body: bytes
) -> SentResponse:
    """Write a complete response (not to HEAD, not 1xx/204/304) in one write through the
    request's own writer, with the framing aiohttp's ``StreamResponse.prepare`` would add:
    ``Content-Length``, ``Date`` and ``Content-Type`` when missing, ``Connection`` when the
    client's keep-alive differs from its version's default. ``headers`` is modified."""
    keep_alive = request.keep_alive
    version = request.version
    if "content-length" not in headers:
        headers["content-length"] = str(len(body))
    if body and "content-type" not in headers:
        headers["content-type"] = "application/octet-stream"  # as aiohttp does
    if "date" not in headers:
        headers["date"] = http_date()
    if not keep_alive and version >= (1, 1):
        headers["connection"] = "close"
    elif keep_alive and version < (1, 1):
        headers["connection"] = "keep-alive"
    phrase = reason or _REASONS.get(status, "")
    writer = request.writer
    # The C serializer refuses CR/LF in names and values (no response splitting).
    await writer.write_headers(f"HTTP/{version[0]}.{version[1]} {status} {phrase}", headers)
    await writer.write_eof(body)
    return SentResponse(status, keep_alive, len(body))


_REASONS = {s.value: s.phrase for s in http.HTTPStatus}
_date_cache: tuple[int, str] = (0, "")


def http_date() -> str:
    """The IMF-fixdate of now, formatted once per second."""
    global _date_cache  # noqa: PLW0603 - a per-process cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]
