"""Request framing and targets the HTTP/1.1 proxy refuses, or treats apart, before any
filter runs: ambiguous message framing (request smuggling), absolute-form targets naming
another host than ``Host``, and WebSocket upgrades."""

from __future__ import annotations

from aiohttp import web

_BAD_LENGTH = "invalid or conflicting Content-Length"


def framing_error(request: web.BaseRequest) -> str | None:
    """Request framing the gateway refuses rather than forward ambiguously (RFC 9112 6.1,
    6.3): both ``Transfer-Encoding`` and ``Content-Length``, several different
    ``Content-Length`` values, or a ``Transfer-Encoding`` that does not end in chunked."""
    headers = request.headers
    lengths = headers.getall("content-length", ())
    if "transfer-encoding" not in headers and len(lengths) <= 1:
        # The common case, decided without building sets or lists.
        return None if not lengths or lengths[0].strip().isdigit() else _BAD_LENGTH
    encodings = headers.getall("transfer-encoding", ())
    if encodings and lengths:
        return "both Transfer-Encoding and Content-Length"
    if len(set(lengths)) > 1 or any(not v.strip().isdigit() for v in lengths):
        return _BAD_LENGTH
    if encodings:
        codings = [c.strip().lower() for v in encodings for c in v.split(",")]
        if codings[-1] != "chunked" or codings.count("chunked") != 1:
            return "Transfer-Encoding must end with a single chunked"
    return None


def split_absolute_form(target: str) -> tuple[str, str, str] | None:
    """``(scheme, authority, origin-form target)`` of an absolute-form request target
    (``http://other.example/a?b``), ``None`` for any other form."""
    if target[:1] == "/" or target == "*":
        return None
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    origin = rest[end:]
    if not origin.startswith("/"):
        origin = "/" + origin
    return scheme.lower(), rest[:end], origin


def _same_authority(host: str, authority: str, scheme: str) -> bool:
    default = ":443" if scheme == "https" else ":80"
    a, b = host.strip().lower(), authority.lower()
    return a.removesuffix(default) == b.removesuffix(default)


def absolute_form_error(request: web.BaseRequest) -> str | None:
    """An absolute-form target (RFC 9112 3.2.2) whose authority is not the ``Host`` the
    request carries: the target would win at the upstream's discretion, filters would
    have checked the other name. Refused rather than guessed."""
    parts = split_absolute_form(request.raw_path)
    if parts is None:
        return None
    scheme, authority, _ = parts
    hosts = request.headers.getall("host", ())
    if not authority or "@" in authority:
        return "the absolute-form request target has no valid authority"
    if len(hosts) > 1 or (hosts and not _same_authority(hosts[0], authority, scheme)):
        return "the request target names another host than the Host header"
    return None


def request_error(request: web.BaseRequest) -> str | None:
    """Why the gateway refuses this request's framing or target (400), ``None`` if it
    does not."""
    return framing_error(request) or absolute_form_error(request)


def is_websocket(request: web.BaseRequest) -> bool:
    """An HTTP/1.1 WebSocket upgrade request (RFC 6455 4.1)."""
    return request.headers.get("upgrade", "").lower() == "websocket" and "upgrade" in (
        request.headers.get("connection", "").lower()
    )
