"""Envoy's gRPC ext_authz service, ``envoy.service.auth.v3.Authorization/Check``.

The messages are :mod:`wardgate.envoy.wire`'s upb classes (the ``envoy-data-plane`` schema,
parsed in C); the server is grpcio's asyncio server (C-core HTTP/2). This module only
translates: ``CheckRequest`` -> :class:`CheckInput`, :class:`Decision` -> ``CheckResponse``.
"""

from __future__ import annotations

from typing import Any

from envoy_data_plane.envoy.config.core.v3 import HeaderValueOptionHeaderAppendAction

from wardgate.envoy import wire
from wardgate.envoy.decision import PARTIAL_BODY_HEADER, CheckInput, Decision

SERVICE = "envoy.service.auth.v3.Authorization"
METHOD = "Check"

# google.rpc.Code values (Envoy only distinguishes OK from the rest; the code is for logs).
_OK = 0
_PERMISSION_DENIED = 7
_UNAUTHENTICATED = 16
_INTERNAL = 13

OVERWRITE = int(HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD)
APPEND = int(HeaderValueOptionHeaderAppendAction.APPEND_IF_EXISTS_OR_ADD)


def _headers(http: Any) -> tuple[tuple[str, str], ...]:
    """The request headers in either of Envoy's encodings: the ``headers`` map (repeated
    names already joined with commas) or, with ``encode_raw_headers``, ``header_map``
    (one entry per field line, raw bytes)."""
    raw = http.header_map.headers
    if raw:
        return tuple(
            (h.key.lower(), h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value)
            for h in raw
        )
    return tuple(http.headers.items())


def check_input(request: Any) -> CheckInput:
    """What Envoy told us about the request (a ``wire.CheckRequest``). A ``CheckRequest``
    without an HTTP request (the network ext_authz filter) has no method: the limits
    filter refuses it like any request with an unknown method."""
    attributes = request.attributes
    if not attributes.request.HasField("http"):
        return CheckInput(method="", target="/", headers=())
    http = attributes.request.http
    headers = _headers(http)
    body: bytes | None = None
    if http.raw_body:
        body = http.raw_body
    elif http.body:
        body = http.body.encode("utf-8", "surrogateescape")
    partial = False
    for name, value in headers:
        if name == PARTIAL_BODY_HEADER:
            partial = value.lower() == "true"
            if body is None:
                body = b""  # Envoy buffered the body and it was empty
    return CheckInput(
        method=http.method,
        target=http.path or "/",
        headers=headers,
        client_address=attributes.source.address.socket_address.address,
        scheme=http.scheme,
        protocol=http.protocol,
        request_id=http.id,
        body=body,
        body_partial=partial,
        size=http.size,
        peer_certificate=attributes.source.certificate,
    )


_ALLOW_METADATA: dict[tuple[str, int], Any] = {}


def _allow_metadata(decision: Decision) -> Any:
    """The (policy-dependent only) metadata of a plain allow, built once per generation."""
    key = (decision.policy_digest, decision.policy_generation)
    cached = _ALLOW_METADATA.get(key)
    if cached is None:
        if len(_ALLOW_METADATA) > 64:  # generations come and go with reloads
            _ALLOW_METADATA.clear()
        cached = _ALLOW_METADATA[key] = wire.Struct()
        cached.update(decision.metadata())
    return cached


def _add_header(options: Any, name: str, value: str, action: int) -> None:
    option = options.add()
    option.header.key = name
    option.header.value = value
    option.append_action = action


def _rpc_code(status: int) -> int:
    if status == 401:
        return _UNAUTHENTICATED
    if status >= 500:
        return _INTERNAL
    return _PERMISSION_DENIED


def check_response(decision: Decision) -> Any:
    """The ``wire.CheckResponse`` for ``decision``, with the decision as dynamic metadata."""
    response = wire.CheckResponse()
    if decision.allowed and not decision.detected:
        response.dynamic_metadata.CopyFrom(_allow_metadata(decision))
    else:
        response.dynamic_metadata.update(decision.metadata())
    if decision.allowed:
        response.status.code = _OK
        ok = response.ok_response
        ok.SetInParent()  # an empty ok_response still says "OK, no changes"
        for name, value in decision.upstream_set:
            _add_header(ok.headers, name, value, OVERWRITE)
        for name, value in decision.upstream_append:
            _add_header(ok.headers, name, value, APPEND)
        ok.headers_to_remove.extend(decision.upstream_remove)
        return response
    response.status.code = _rpc_code(decision.status)
    denied = response.denied_response
    denied.status.code = decision.status
    for name, value in decision.headers:
        _add_header(denied.headers, name, value, OVERWRITE)
    denied.body = decision.body.decode("utf-8", "replace")
    return response


def parse_check_request(data: bytes) -> Any:
    """Deserializer for grpcio."""
    return wire.CheckRequest.FromString(data)


def serialize_check_response(response: Any) -> bytes:
    """Serializer for grpcio."""
    return bytes(response.SerializeToString())
