"""Envoy's HTTP ext_authz service: Envoy sends a copy of the request (method, path, the
headers its ``allowed_headers`` lets through, and the buffered body with
``with_request_body``); a 200 allows, any other status denies.

* Allowed: a 200 whose headers are the upstream header changes (Envoy copies those its
  ``allowed_upstream_headers`` matcher names, overwriting) and, for headers to drop,
  ``x-envoy-auth-headers-to-remove: a, b``.
* Denied: the native proxy's local reply (status, headers, problem+json body); Envoy sends
  it to the client. A 5xx refusal (a filter that raised) is sent as 403: Envoy would read
  a 5xx as "the authorization service failed" and, with ``failure_mode_allow``, allow.
"""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import web

from wardgate.envoy.decision import (
    PARTIAL_BODY_HEADER,
    CheckInput,
    Decision,
    decide,
    internal_error,
)
from wardgate.runtime import PolicyHolder

HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"
REFUSED_ON_ERROR = 403
BODY_READ_TIMEOUT = 30.0
MAX_CHECK_BODY_BYTES = 64 * 1024 * 1024
"""Refuse check requests with larger bodies (Envoy's ``max_request_bytes`` is far lower)."""


def _client_address(request: web.BaseRequest) -> str:
    """The peer of this connection is Envoy itself. For external requests Envoy sets
    ``x-envoy-external-address`` (and strips a client-sent one); otherwise the last
    ``x-forwarded-for`` entry is the one Envoy's connection manager appended."""
    external = request.headers.get("x-envoy-external-address")
    if external:
        return external.strip()
    forwarded = request.headers.getall("x-forwarded-for", ())
    if forwarded:
        return forwarded[-1].rsplit(",", 1)[-1].strip()
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if peer else ""


async def _read_body(request: web.BaseRequest) -> bytes:
    """The whole check-request body (what Envoy buffered), bounded in size and time."""
    parts: list[bytes] = []
    size = 0
    async with asyncio.timeout(BODY_READ_TIMEOUT):
        while chunk := await request.content.readany():
            size += len(chunk)
            if size > MAX_CHECK_BODY_BYTES:
                raise ValueError("check request body too large")
            parts.append(chunk)
    return b"".join(parts)


async def check_input(request: web.BaseRequest) -> CheckInput:
    headers = tuple((name.lower(), value) for name, value in request.headers.items())
    buffered = any(name == PARTIAL_BODY_HEADER for name, _ in headers)
    body: bytes | None = None
    if request.body_exists or buffered:
        body = await _read_body(request)
        if not body and not buffered:
            body = None
    partial = request.headers.get(PARTIAL_BODY_HEADER, "").lower() == "true"
    if buffered:
        # Envoy rewrote Content-Length to the size of what it buffered; the client's
        # framing is unknown from here, so it is not shown to the filters as theirs.
        headers = tuple(h for h in headers if h[0] != "content-length")
        if body:
            headers += (("content-length", str(len(body))),) if not partial else ()
    elif body is None:
        headers = tuple(h for h in headers if not (h[0] == "content-length" and h[1] == "0"))
    return CheckInput(
        method=request.method,
        target=request.raw_path,
        headers=headers,
        client_address=_client_address(request),
        protocol=f"HTTP/{request.version.major}.{request.version.minor}",
        body=body,
        body_partial=partial,
    )


def http_response(decision: Decision) -> web.Response:
    if decision.allowed:
        response = web.Response(status=200)
        for name, value in (*decision.upstream_set, *decision.upstream_append):
            response.headers.add(name, value)
        if decision.upstream_remove:
            response.headers[HEADERS_TO_REMOVE] = ", ".join(decision.upstream_remove)
        return response
    # Envoy treats a 5xx from the HTTP authorization service as the service failing, and
    # with failure_mode_allow: true lets the request through. A refusal must never read as
    # a failure, so 5xx refusals go out as 403 (the body still says what happened).
    status = decision.status if decision.status < 500 else REFUSED_ON_ERROR
    response = web.Response(status=status, body=decision.body)
    for name, value in decision.headers:
        response.headers.add(name, value)
    return response


class HttpAuthzHandler:
    """An aiohttp low-level handler (``web.Server(handler)``) answering every path."""

    def __init__(self, holder: PolicyHolder) -> None:
        self.holder = holder

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        policy = self.holder.current  # read once: this check keeps this generation
        try:
            check = await check_input(request)
        except (ValueError, TimeoutError, ConnectionError):
            refusal = internal_error(policy, str(uuid.uuid4()), "invalid_check_request")
            response = http_response(refusal)
            response.force_close()
            return response
        return http_response(await decide(policy, check))
