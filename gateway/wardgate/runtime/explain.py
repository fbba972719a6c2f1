"""Offline decisions: run a described request through a policy, no network involved.

The request is a YAML/JSON mapping (``method``, ``path`` with its query, ``headers``,
``body``, ``client``, ``peer``: the names of the client certificate a mutual-TLS
connection would have verified, ``{uri: [...], dns: [...], subject: "CN=..."}``) or a raw
HTTP/1.1 request. The gateway's request sequence runs it
(:meth:`RequestPipeline.decode_request`: headers, body, body cap), so the answer is the
gateway's answer for that request, in the same words."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import yaml
from multidict import CIMultiDict

from wardgate.errors import RequestDescriptionError as RequestDescriptionError  # noqa: PLC0414 - re-export
from wardgate.filters.api import HttpRequest
from wardgate.filters.identity import PeerIdentity
from wardgate.runtime.chain import RequestPipeline
from wardgate.runtime.compiled import CompiledPolicy
from wardgate.runtime.forwarding import (
    apply_forwarded_headers,
    ensure_request_id,
    strip_hop_by_hop,
)
from wardgate.runtime.identity import XFCC, set_client_cert_header

SENSITIVE_HEADERS = frozenset({"authorization", "cookie", "set-cookie", "proxy-authorization"})


@dataclasses.dataclass(frozen=True, slots=True)
class RequestDescription:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    client: str = "127.0.0.1"
    peer: PeerIdentity | None = None


def parse_request_description(raw: bytes) -> RequestDescription:
    """Parse a raw HTTP request or a YAML/JSON description."""
    first = raw.split(b"\n", 1)[0].rstrip(b"\r")
    if b" HTTP/" in first:
        return _parse_raw_http(raw)
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RequestDescriptionError(f"not a raw HTTP request nor YAML/JSON: {exc}") from None
    if not isinstance(data, Mapping):
        raise RequestDescriptionError("the request description must be a mapping")
    unknown = set(data) - {"method", "path", "headers", "body", "client", "peer"}
    if unknown:
        raise RequestDescriptionError(f"unknown fields: {', '.join(sorted(map(str, unknown)))}")
    headers: list[tuple[str, str]] = []
    raw_headers = data.get("headers") or {}
    if not isinstance(raw_headers, Mapping):
        raise RequestDescriptionError("headers must be a mapping of name to value or list")
    for name, value in raw_headers.items():
        values = value if isinstance(value, list) else [value]
        headers.extend((str(name), str(v)) for v in values)
    body = data.get("body") or ""
    if not isinstance(body, str):
        raise RequestDescriptionError("body must be a string")
    path = str(data.get("path") or "/")
    if not path.startswith("/"):
        raise RequestDescriptionError("path must start with '/'")
    return RequestDescription(
        method=str(data.get("method") or "GET"),
        target=path,
        headers=tuple(headers),
        body=body.encode(),
        client=str(data.get("client") or "127.0.0.1"),
        peer=_peer(data.get("peer")),
    )


def _peer(data: object) -> PeerIdentity | None:
    """``peer: {uri: [...], dns: [...], subject: ...}``: a verified client certificate."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise RequestDescriptionError("peer must be a mapping (uri, dns, subject)")
    unknown = set(data) - {"uri", "dns", "subject"}
    if unknown:
        listed = ", ".join(sorted(map(str, unknown)))
        raise RequestDescriptionError(f"unknown peer fields: {listed}")

    def names(key: str) -> tuple[str, ...]:
        value = data.get(key) or []
        values = value if isinstance(value, list) else [value]
        return tuple(str(v) for v in values)

    return PeerIdentity(names("uri"), names("dns"), str(data.get("subject") or ""), "0" * 64)


def _parse_raw_http(raw: bytes) -> RequestDescription:
    head, sep, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    lines = head.decode("latin-1").split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise RequestDescriptionError(f"malformed request line: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise RequestDescriptionError(f"malformed header line: {line[:80]!r}")
        headers.append((name, value.strip()))
    return RequestDescription(parts[0], parts[1], tuple(headers), body if sep else b"")


def build_request(
    policy: CompiledPolicy, desc: RequestDescription, scheme: str = "http"
) -> HttpRequest:
    """The :class:`HttpRequest` the gateway would build for this request."""
    path, _, query = desc.target.partition("?")
    headers = strip_hop_by_hop(CIMultiDict(desc.headers))
    if desc.body and "content-length" not in headers:
        headers["content-length"] = str(len(desc.body))
    request_id = ensure_request_id(headers, policy.proxy)
    client = apply_forwarded_headers(headers, policy.proxy, desc.client, scheme)
    headers.popall(XFCC, None)  # as the gateway: a client's own value never passes
    return HttpRequest(
        method=desc.method,
        raw_target=desc.target,
        path=path,
        query=query,
        headers=headers,
        scheme=scheme,
        client_address=client,
        request_id=request_id,
        peer=desc.peer,
    )


async def explain(policy: CompiledPolicy, desc: RequestDescription) -> dict[str, Any]:
    """The decision for ``desc`` under ``policy`` as a JSON-ready mapping."""
    request = build_request(policy, desc)
    pipeline = RequestPipeline(policy, request)
    reply = await pipeline.decode_request(desc.body, True)
    result: dict[str, Any] = {
        "policy": {"digest": policy.digest, "generation": policy.generation},
        "request": {"method": desc.method, "path": request.path, "requestId": request.request_id},
    }
    if reply is None:
        result["decision"] = "allow"
        if request.peer is not None:
            set_client_cert_header(request.headers, request.peer)
        result["upstreamHeaders"] = {
            name: ("[redacted]" if name.lower() in SENSITIVE_HEADERS else value)
            for name, value in request.headers.items()
        }
    else:
        result["decision"] = "deny"
        result["status"] = reply.status
        result["filter"] = reply.filter
        result["reason"] = reply.reason
        result["detail"] = reply.detail
        result["violations"] = [v.as_dict() for v in reply.violations]
    if request.findings:
        result["detected"] = [v.as_dict() for v in request.findings]
    waf_notes = request.metadata.get("waf")
    if isinstance(waf_notes, Mapping):
        # Matches that did not count: which exception suppressed which match, and which
        # weak signal stood alone (see docs/waf.md, scoring).
        for key in ("suppressed", "uncorroborated"):
            if waf_notes.get(key):
                result[key] = list(waf_notes[key])
    return result
