"""The ``response_waf`` filter: security headers on every response, and error masking.

Error masking: the first ``maxInspectBytes`` of a text-like upstream response body (see
:func:`inspectable`) are scanned for leak signatures (:mod:`.patterns`); in ``enforce``
mode a match replaces the whole response with a generic 502 that says nothing about the
upstream, in ``detect`` mode it is logged and counted and the response goes out unchanged.
Other content types are never buffered: they stream through untouched. A gzip or deflate
body is inspected decompressed (bounded by ``maxInspectBytes``) and sent as it came.
"""

from __future__ import annotations

import json
import logging
import zlib

from prometheus_client import Counter

from wardgate.config.policy import PolicySpec
from wardgate.config.waf import WafMode, WafResponseSpec
from wardgate.filters.api import (
    FilterConfig,
    HttpFilter,
    HttpRequest,
    HttpResponse,
    LocalReply,
    Violation,
)
from wardgate.filters.response_waf.patterns import LeakScanner, LeakSignature, default_scanner

NAME = "response_waf"
log = logging.getLogger("wardgate.waf.response")

LEAKS = Counter(
    "wardgate_waf_response_leaks",
    "Upstream responses with an information leak, by signature and action (block: replaced "
    "with a 502; detect: logged and let through).",
    ["signature", "action"],
)

SERVER_HEADERS = ("server", "x-powered-by", "x-aspnet-version", "x-aspnetmvc-version")
"""Upstream headers that name the stack (removed with ``removeServerHeaders``)."""

_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/xhtml+xml",
        "application/javascript",
        "application/x-javascript",
        "application/x-httpd-php",
    }
)
_NO_BODY = frozenset({204, 304})


def media_type(content_type: str | None) -> str:
    """``text/html; charset=utf-8`` -> ``text/html`` (lowercase, no parameters)."""
    if not content_type:
        return ""
    return content_type.partition(";")[0].strip().lower()


def inspectable(content_type: str | None) -> bool:
    """Whether a body of this type is buffered and scanned: ``text/*`` (not
    ``text/event-stream``, which is a stream that must not wait), JSON, XML, HTML and
    ``+json`` / ``+xml`` types, and a missing type (browsers sniff those, so they are read
    as text). Everything else (images, archives, ``application/octet-stream``...) streams."""
    mime = media_type(content_type)
    if not mime:
        return True
    if mime.startswith("text/"):
        return mime != "text/event-stream"
    return mime in _TEXT_TYPES or mime.endswith(("+json", "+xml"))


class ResponseWafConfig(FilterConfig):
    """``waf.response`` compiled for one policy generation."""

    name = NAME

    def __init__(self, spec: WafResponseSpec, scanner: LeakScanner) -> None:
        self.spec = spec
        self.scanner = scanner
        self.mode = spec.mode
        headers = spec.security_headers
        added: list[tuple[str, str]] = []
        if headers.content_type_options:
            added.append(("x-content-type-options", "nosniff"))
        if headers.strict_transport_security:
            added.append(("strict-transport-security", headers.strict_transport_security))
        self.added_headers: tuple[tuple[str, str], ...] = tuple(added)
        self.removed_headers: tuple[str, ...] = (
            SERVER_HEADERS if headers.remove_server_headers else ()
        )
        self.response_body_limit = spec.max_inspect_bytes if self.mode is not WafMode.OFF else None
        self._filter = ResponseWafFilter(self)

    def create_filter(self) -> HttpFilter:
        return self._filter  # stateless: one instance serves every request


class ResponseWafFilter(HttpFilter):
    """Stateless per-request filter (all state is in the config)."""

    __slots__ = ("config",)

    def __init__(self, config: ResponseWafConfig) -> None:
        self.config = config

    def encode_headers(self, request: HttpRequest, response: HttpResponse) -> LocalReply | None:
        headers = response.headers
        for name in self.config.removed_headers:
            headers.popall(name, None)
        for name, value in self.config.added_headers:
            headers[name] = value
        return None

    def wants_response_body(self, request: HttpRequest, response: HttpResponse) -> bool:
        return (
            not response.local
            and response.status not in _NO_BODY
            and request.method != "HEAD"
            and inspectable(response.headers.get("content-type"))
        )

    def encode_body(
        self, request: HttpRequest, response: HttpResponse, body: bytes, complete: bool
    ) -> LocalReply | None:
        if not body or not self.wants_response_body(request, response):
            return None
        limit = self.config.spec.max_inspect_bytes
        text = _decoded(body, response.headers.get("content-encoding"), limit)
        if text is None:
            return None
        found = self.config.scanner.scan(text)
        if found is None:
            return None
        return _decide(request, response, self.config.mode, found.signature)


def _decoded(body: bytes, encoding: str | None, limit: int) -> bytes | None:
    """What to scan: the body itself, or up to ``limit`` bytes of it decompressed (a cut or
    damaged stream yields what decompressed so far); ``None`` for an encoding we cannot
    read (nothing to scan)."""
    coding = (encoding or "").strip().lower()
    if coding in ("", "identity"):
        return body
    if coding in ("gzip", "x-gzip", "deflate"):
        wbits = 47 if coding != "deflate" else 15
        try:
            return zlib.decompressobj(wbits).decompress(body, limit)
        except zlib.error:
            if coding == "deflate":  # some servers send raw deflate without the zlib header
                try:
                    return zlib.decompressobj(-15).decompress(body, limit)
                except zlib.error:
                    return None
            return None
    return None


def _decide(
    request: HttpRequest, response: HttpResponse, mode: WafMode, signature: LeakSignature
) -> LocalReply | None:
    violation = Violation(f"{NAME}.{signature.id}", "response:body", signature.message)
    action = "block" if mode is WafMode.ENFORCE else "detect"
    LEAKS.labels(signature=signature.id, action=action).inc()
    log.warning(
        "upstream response leaks information",
        extra={
            "wardgate": {
                "requestId": request.request_id,
                "filter": NAME,
                "ruleIds": [violation.rule_id],
                "category": signature.category,
                "upstreamStatus": response.status,
                "action": action,
            }
        },
    )
    if mode is not WafMode.ENFORCE:
        request.findings.append(violation)
        return None
    return LocalReply(
        status=502,
        filter=NAME,
        reason="upstream_leak",
        detail="the upstream response was withheld",
        violations=(violation,),
        body=_generic_body(request.request_id),
    )


def _generic_body(request_id: str) -> bytes:
    """The 502 the client sees: no rule id, no hint of what the upstream said."""
    problem = {
        "type": "about:blank",
        "title": "Bad Gateway",
        "status": 502,
        "detail": "The upstream service failed to answer this request.",
        "requestId": request_id,
    }
    return json.dumps(problem, separators=(",", ":")).encode() + b"\n"


def compile(policy: PolicySpec) -> ResponseWafConfig | None:
    """``None`` (not in the chain) when ``waf.mode`` is ``off``, or when the response side
    has nothing to do (``response.mode: off`` and no security header configured)."""
    spec = policy.waf
    if spec.mode is WafMode.OFF:
        return None
    response = spec.response
    headers = response.security_headers
    if response.mode is WafMode.OFF and not (
        headers.content_type_options
        or headers.strict_transport_security
        or headers.remove_server_headers
    ):
        return None
    return ResponseWafConfig(response, default_scanner())
