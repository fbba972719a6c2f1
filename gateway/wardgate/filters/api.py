"""The filter contract: what every filter under ``wardgate.filters`` implements, and the
request/response views the chain hands them.

Three objects per filter, as in Envoy (``config.proto`` / ``FilterConfigImpl`` / ``Filter``):

* the ``…Spec`` (``wardgate.config``) is what the user wrote;
* a :class:`FilterConfig` is its compiled, frozen form for one policy generation, built by
  the filter package's ``compile(policy: PolicySpec) -> FilterConfig | None`` (``None``:
  the section is off and the filter is not in the chain);
* a :class:`HttpFilter` holds one request's state (``FilterConfig.create_filter``).

Phases, in order (the chain in ``wardgate.runtime`` drives them):

1. ``decode_headers`` in chain order: ``None`` continues, a :class:`LocalReply` ends the
   request. A filter may change ``request.headers`` (what the upstream receives).
2. ``decode_body`` only for filters whose config declares ``request_body_limit``, for every
   request that passed the header phase (with ``b""`` when there is no body, so a filter
   can refuse a missing required body): the chain buffers the body once, up to the
   largest declared limit; ``complete`` is ``False`` when the body was longer (the filter
   sees the prefix and decides: refuse, or let the rest stream through uninspected). The
   whole body still reaches the upstream unchanged.
3. ``encode_headers`` in reverse chain order on the upstream's response and on local
   replies; may change ``response.headers`` or return a :class:`LocalReply` instead.
4. ``encode_body`` only for filters declaring ``response_body_limit``; may replace
   ``response.body``. After ``encode_headers``, each such filter's ``wants_response_body``
   says whether this response's body is worth buffering (by default: yes); when none wants
   it, the body streams through unbuffered.

A filter must never raise on bad input: bad input is a :class:`LocalReply`. An exception
that escapes anyway makes the chain refuse the request (fail closed) and count it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from multidict import CIMultiDict

from wardgate.errors import FilterCompileError as FilterCompileError  # noqa: PLC0414 - re-export
from wardgate.filters.identity import PeerIdentity
from wardgate.filters.json_body import ParsedJson
from wardgate.observability.response_flags import ResponseFlag


@dataclass(frozen=True, slots=True)
class Violation:
    """One reason for a decision: which rule, where in the request (``header:user-agent``,
    ``query:id``, ``body:$.items[0].name``, ``path``), and a short message. Never the
    matched value: it may be a secret or the attack itself."""

    rule_id: str
    location: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"ruleId": self.rule_id, "location": self.location, "message": self.message}


@dataclass(frozen=True, slots=True)
class LocalReply:
    """A response the gateway sends itself instead of forwarding the request.

    ``filter`` and ``reason`` (a stable snake_case code) say who decided and why; they go to
    the access log, metrics and ``wardgate explain``. When ``body`` is ``None`` the adapter
    renders an RFC 9457 ``application/problem+json`` body from ``title``, ``detail``,
    ``reason`` and ``violations``. ``response_flag`` is Envoy's access-log flag (``UAEX``
    for policy refusals, ``UF``/``UT``/``UC``/``UH`` for upstream failures)."""

    status: int
    filter: str
    reason: str
    detail: str = ""
    violations: tuple[Violation, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    content_type: str = "application/problem+json"
    response_flag: ResponseFlag = ResponseFlag.UNAUTHORIZED_EXTERNAL_SERVICE

    def render_body(self, request_id: str) -> bytes:
        """The body to send: ``body`` as given, or a problem+json document."""
        if self.body is not None:
            return self.body
        problem: dict[str, Any] = {
            "type": "about:blank",
            "title": _title(self.status),
            "status": self.status,
            "detail": self.detail or _title(self.status),
            "reason": self.reason,
            "filter": self.filter,
            "requestId": request_id,
        }
        if self.violations:
            problem["violations"] = [v.as_dict() for v in self.violations]
        return json.dumps(problem, separators=(",", ":")).encode() + b"\n"


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _title(status: int) -> str:
    return _TITLES.get(status, "Error")


@dataclass(slots=True)
class HttpRequest:
    """One request as filters see it. ``headers`` is what will be sent upstream (hop-by-hop
    headers already removed) and filters may change it; ``raw_target`` is the request
    target exactly as the client sent it. ``metadata`` is Envoy's dynamic metadata: each
    filter writes under its own name (``jwt_authn`` puts verified claims there) so later
    filters can use results without importing each other. ``findings`` collects
    violations seen in detect mode (logged, not refused). ``peer`` is the identity from
    the client's verified TLS certificate (mutual TLS), ``None`` without one."""

    method: str
    raw_target: str
    path: str
    query: str
    headers: CIMultiDict[str]
    scheme: str = "http"
    version: str = "HTTP/1.1"
    client_address: str = ""
    request_id: str = ""
    body: bytes | None = None
    body_complete: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)
    findings: list[Violation] = field(default_factory=list)
    peer: PeerIdentity | None = None
    vouched: frozenset[tuple[str, str]] = frozenset()
    """(lower-case header name, exact value) pairs that are not client free text: the
    ``x-request-id`` the gateway generated itself, each bearer header whose token the JWT
    filter verified. The WAF does not scan these values (RATIONALE.md, "Values the gateway
    vouches for are not scanned")."""
    parsed_json: ParsedJson | None = None
    """The body's strict JSON parse, kept by the first filter that needed it so the next
    one does not parse it again (:mod:`wardgate.filters.json_body`; read-only)."""


@dataclass(slots=True)
class HttpResponse:
    """A response on its way to the client. ``body`` is set only when some filter asked
    for the response body (or for local replies)."""

    status: int
    headers: CIMultiDict[str]
    body: bytes | None = None
    body_complete: bool = True
    local: bool = False


class HttpFilter:
    """Per-request filter state. Every phase has a default that continues unchanged."""

    async def decode_headers(self, request: HttpRequest) -> LocalReply | None:
        return None

    async def decode_body(
        self, request: HttpRequest, body: bytes, complete: bool
    ) -> LocalReply | None:
        return None

    def encode_headers(self, request: HttpRequest, response: HttpResponse) -> LocalReply | None:
        return None

    def wants_response_body(self, request: HttpRequest, response: HttpResponse) -> bool:
        """Whether this response's body should be buffered for ``encode_body`` (asked
        after ``encode_headers``, only of filters declaring ``response_body_limit``). A
        filter that inspects some content types only says ``False`` for the others, so
        those stream. ``encode_body`` may still be called (not every adapter can skip
        it), so it must check again."""
        return True

    def encode_body(
        self, request: HttpRequest, response: HttpResponse, body: bytes, complete: bool
    ) -> LocalReply | None:
        return None


class FilterConfig(ABC):
    """A filter's compiled configuration for one policy generation: immutable after
    construction, shared by every request and (for ``wardgate.envoy``) every protocol."""

    name: ClassVar[str]
    """The filter's name in logs, metrics and decisions (``limits``, ``jwt_authn``...)."""

    request_body_limit: int | None = None
    """Bytes of request body this filter needs buffered; ``None``: it never reads it."""

    response_body_limit: int | None = None
    """Bytes of response body this filter needs buffered; ``None``: it never reads it."""

    max_request_body_bytes: int | None = None
    """A hard cap on the streamed request body this filter imposes (413 over it)."""

    sources: tuple[tuple[str, str], ...] = ()
    """Files this filter read at compile time (an OpenAPI spec), as ``(path, sha256
    hex)``: they are part of the policy digest, and the reloader watches them."""

    @abstractmethod
    def create_filter(self) -> HttpFilter:
        """The per-request filter object (may be a shared stateless instance)."""

    def limitations(self) -> tuple[str, ...]:
        """What this filter cannot check in the current configuration, for ``wardgate
        validate`` and ``config_dump`` (for example: no body under ext_authz)."""
        return ()
