"""One decision, several front doors: the protocol-neutral core of the Envoy adapters.

Each adapter (HTTP ext_authz, gRPC ext_authz, ext_proc) turns what Envoy sent into a
:class:`CheckInput`, calls :func:`decide`, and maps the :class:`Decision` back onto its own
wire format. The decision runs the same :class:`RequestPipeline` on the same
:class:`CompiledPolicy` as the native proxy, so a policy means the same thing on every door.

Contract:

* a refusal (a filter's :class:`LocalReply`) becomes a denied decision carrying the status,
  headers and rendered body the native proxy would have sent;
* continuing becomes an allowed decision; the changes filters made to ``request.headers``
  (what the upstream receives) are computed by diffing the headers before and after the
  chain, so a filter never needs to know it runs behind Envoy;
* any exception, anywhere in here, is a denied decision (500): never allow on an internal
  error.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from multidict import CIMultiDict

from wardgate.filters.api import HttpRequest, LocalReply
from wardgate.observability import metrics
from wardgate.runtime import CompiledPolicy, RequestPipeline
from wardgate.runtime.forwarding import strip_hop_by_hop
from wardgate.runtime.identity import identity_from_pem

log = logging.getLogger("wardgate.envoy")

PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"
"""Envoy's marker on a check request whose body was cut at ``max_request_bytes``."""

ENVOY_FILTER = "ext_authz"
"""``replied_by`` for refusals the adapter itself makes (internal errors, bad input)."""


@dataclass(frozen=True, slots=True)
class CheckInput:
    """A request as Envoy describes it, protocol-neutral.

    ``headers`` are lower-case names as Envoy sends them (pseudo-headers included: they are
    dropped here, ``:authority`` becomes ``host``). ``body`` is ``None`` when Envoy sent no
    body at all, else the bytes it buffered; ``body_partial`` says Envoy cut it.
    ``size`` is the request body size Envoy knows (``-1``: unknown)."""

    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    client_address: str = ""
    scheme: str = "http"
    protocol: str = "HTTP/1.1"
    request_id: str = ""
    body: bytes | None = None
    body_partial: bool = False
    size: int = -1
    peer_certificate: str = ""
    """The downstream client certificate Envoy verified (``source.certificate``, URL-encoded
    PEM; Envoy sends it with ``include_peer_certificate: true``): the ``peer`` filter's
    caller identity."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for Envoy. ``allowed``: continue to the upstream with the header changes;
    else reply with ``status``, ``headers`` and ``body`` to the client."""

    allowed: bool
    status: int
    request_id: str
    filter: str = ""
    reason: str = ""
    rule_ids: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()
    detected: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    """Denied: the headers of the local reply, for the client."""
    body: bytes = b""
    """Denied: the body of the local reply, for the client."""
    upstream_set: tuple[tuple[str, str], ...] = ()
    """Allowed: headers to set on the upstream request (overwriting an existing value)."""
    upstream_append: tuple[tuple[str, str], ...] = ()
    """Allowed: further values to append (a header the chain left with several values)."""
    upstream_remove: tuple[str, ...] = ()
    """Allowed: headers to remove from the upstream request."""
    policy_digest: str = ""
    policy_generation: int = 0

    def metadata(self) -> dict[str, Any]:
        """The decision as Envoy dynamic metadata (under ``wardgate``), for the access log:
        ``%DYNAMIC_METADATA(envoy.filters.http.ext_authz:wardgate:reason)%``. Names and
        rule ids only, never a header value or body. The request id is there for refusals
        (it ties the log line to the problem body's ``requestId``); an allowed request's
        metadata depends only on the policy, so adapters may cache it."""
        doc: dict[str, Any] = {
            "decision": "allow" if self.allowed else "deny",
            "status": self.status,
            "policy_digest": self.policy_digest,
            "policy_generation": self.policy_generation,
        }
        if not self.allowed:
            doc["request_id"] = self.request_id
            doc["filter"] = self.filter
            doc["reason"] = self.reason
            doc["rule_ids"] = list(self.rule_ids)
            doc["locations"] = list(self.locations)
        if self.detected:
            doc["detected"] = list(self.detected)
        return {"wardgate": doc}


def build_request(check: CheckInput) -> HttpRequest:
    """The :class:`HttpRequest` filters see. Envoy's connection manager already did the
    forwarding work (``x-forwarded-for``, ``x-request-id``, hop-by-hop removal), so the
    headers are taken as Envoy sent them, minus pseudo-headers and Envoy's own
    ``x-envoy-auth-partial-body`` marker."""
    headers: CIMultiDict[str] = CIMultiDict()
    authority = ""
    for name, value in check.headers:
        if name[:1] == ":":
            if name == ":authority":
                authority = value
            continue
        if name == PARTIAL_BODY_HEADER:
            continue
        headers.add(name, value)
    if authority and "host" not in headers:
        headers["host"] = authority
    headers = strip_hop_by_hop(headers)
    request_id = headers.get("x-request-id", "") or check.request_id or str(uuid.uuid4())
    path, _, query = check.target.partition("?")
    return HttpRequest(
        method=check.method,
        raw_target=check.target,
        path=path,
        query=query,
        headers=headers,
        scheme=check.scheme or "http",
        version=check.protocol or "HTTP/1.1",
        client_address=check.client_address,
        request_id=request_id,
        peer=identity_from_pem(unquote(check.peer_certificate)) if check.peer_certificate else None,
    )


def has_body(check: CheckInput, request: HttpRequest) -> bool:
    """Whether the client's request carries a body (what the native proxy's
    ``body_exists`` says): a non-zero length, chunked framing, or body bytes Envoy sent."""
    if check.body:
        return True
    if check.size > 0:
        return True
    length = request.headers.get("content-length", "")
    if length.strip().isdigit() and int(length) > 0:
        return True
    return "transfer-encoding" in request.headers


def _group(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in pairs:
        grouped.setdefault(name.lower(), []).append(value)
    return grouped


def header_changes(
    before: Iterable[tuple[str, str]], after: Iterable[tuple[str, str]]
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...], tuple[str, ...]]:
    """``(set, append, remove)`` turning ``before`` into ``after``: for each header whose
    values changed, set the first value and append the others; remove headers that went."""
    before, after = list(before), list(after)
    if before == after:  # the common case: no filter changed a header
        return (), (), ()
    old, new = _group(before), _group(after)
    to_set: list[tuple[str, str]] = []
    to_append: list[tuple[str, str]] = []
    for name, values in new.items():
        if old.get(name) == values:
            continue
        to_set.append((name, values[0]))
        to_append.extend((name, value) for value in values[1:])
    to_remove = tuple(name for name in old if name not in new)
    return tuple(to_set), tuple(to_append), to_remove


def denied(pipeline: RequestPipeline, reply: LocalReply) -> Decision:
    """The denied decision for ``reply``: the native proxy's local response (response
    header policy applied, problem+json rendered)."""
    response = pipeline.local_response(reply)
    request = pipeline.request
    headers = [(k, v) for k, v in response.headers.items() if k.lower() != "x-request-id"]
    headers.append(("x-request-id", request.request_id))
    policy = pipeline.policy
    return Decision(
        allowed=False,
        status=response.status,
        request_id=request.request_id,
        filter=reply.filter,
        reason=reply.reason,
        rule_ids=tuple(v.rule_id for v in reply.violations),
        locations=tuple(v.location for v in reply.violations),
        detected=_detected(request),
        headers=tuple(headers),
        body=response.body or b"",
        policy_digest=policy.short_digest,
        policy_generation=policy.generation,
    )


def _detected(request: HttpRequest) -> tuple[str, ...]:
    return tuple(f"{v.rule_id}@{v.location}" for v in request.findings)


def internal_error(policy: CompiledPolicy, request_id: str, reason: str) -> Decision:
    """Fail closed: the request could not be checked, so it is refused."""
    body = LocalReply(500, ENVOY_FILTER, reason, "the request could not be checked")
    return Decision(
        allowed=False,
        status=500,
        request_id=request_id,
        filter=ENVOY_FILTER,
        reason=reason,
        headers=(("content-type", body.content_type), ("x-request-id", request_id)),
        body=body.render_body(request_id),
        policy_digest=policy.short_digest,
        policy_generation=policy.generation,
    )


async def decide(policy: CompiledPolicy, check: CheckInput) -> Decision:
    """Run ``check`` through ``policy``'s request phases. Never raises: an exception is a
    denied decision (500, counted, logged by type only)."""
    request_id = check.request_id
    try:
        request = build_request(check)
        request_id = request.request_id
        decision = await _run(policy, check, request)
    except Exception as exc:
        metrics.FILTER_ERRORS.labels(filter=ENVOY_FILTER).inc()
        log.error(
            "check failed inside the adapter; request refused (fail closed)",
            extra={"wardgate": {"error": type(exc).__name__, "request_id": request_id}},
        )
        decision = internal_error(policy, request_id or str(uuid.uuid4()), "internal_error")
    metrics.count_request(decision.status, decision.filter if not decision.allowed else "upstream")
    return decision


async def _run(policy: CompiledPolicy, check: CheckInput, request: HttpRequest) -> Decision:
    before = list(request.headers.items())
    pipeline = RequestPipeline(policy, request)
    reply = await pipeline.decode_request(*body_of(check, request))
    if reply is not None:
        return denied(pipeline, reply)
    to_set, to_append, to_remove = header_changes(before, request.headers.items())
    return Decision(
        allowed=True,
        status=200,
        request_id=request.request_id,
        detected=_detected(request),
        upstream_set=to_set,
        upstream_append=to_append,
        upstream_remove=to_remove,
        policy_digest=policy.short_digest,
        policy_generation=policy.generation,
    )


def body_of(check: CheckInput, request: HttpRequest) -> tuple[bytes, bool]:
    """``(bytes, complete)`` of the request body for the pipeline's body phase: ``(b"",
    True)`` when the client sent none. No body from Envoy for a request that has one
    (``with_request_body`` not configured) is an empty, incomplete prefix: each body
    filter then applies its own rule for bodies it cannot see whole, exactly as for a
    body over its buffer limit.

    Envoy's ``x-envoy-auth-partial-body`` says ``false`` when its buffer holds exactly
    ``max_request_bytes`` (more may follow), so it is not trusted alone: a declared
    ``Content-Length`` longer than the bytes sent also means cut, and a body longer than
    the policy's limit is incomplete by length (hence ``max_request_bytes`` > limit)."""
    if not has_body(check, request):
        return b"", True
    data = check.body or b""
    whole = check.body is not None and not check.body_partial
    declared = request.headers.get("content-length", "")
    if whole and declared.isdigit() and int(declared) > len(data):
        whole = False
    return data, whole
