"""Envoy's gRPC ext_authz service, ``envoy.service.auth.v3.Authorization/Check``.

The message types come from ``envoy-data-plane`` (generated from Envoy's own protos); the
server is grpcio's asyncio server (C-core HTTP/2). This module only translates:
``CheckRequest`` -> :class:`CheckInput`, :class:`Decision` -> ``CheckResponse``.
"""

from __future__ import annotations

from typing import Any

from envoy_data_plane.envoy.config.core.v3 import (
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
)
from envoy_data_plane.envoy.service.auth.v3 import (
    AttributeContextHttpRequest,
    AttributeContextPeer,
    CheckRequest,
    CheckResponse,
    DeniedHttpResponse,
    OkHttpResponse,
)
from envoy_data_plane.envoy.type.v3 import HttpStatus, StatusCode
from envoy_data_plane.google.protobuf import Struct
from envoy_data_plane.google.rpc import Status

from wardgate.envoy.decision import PARTIAL_BODY_HEADER, CheckInput, Decision

SERVICE = "envoy.service.auth.v3.Authorization"
METHOD = "Check"

# google.rpc.Code values (Envoy only distinguishes OK from the rest; the code is for logs).
_OK = 0
_PERMISSION_DENIED = 7
_UNAUTHENTICATED = 16
_INTERNAL = 13

_OVERWRITE = HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = HeaderValueOptionHeaderAppendAction.APPEND_IF_EXISTS_OR_ADD


def _headers(http: AttributeContextHttpRequest) -> tuple[tuple[str, str], ...]:
    """The request headers in either of Envoy's encodings: the ``headers`` map (repeated
    names already joined with commas) or, with ``encode_raw_headers``, ``header_map``
    (one entry per field line, raw bytes)."""
    if http.header_map is not None and http.header_map.headers:
        return tuple(
            (
                h.key.lower(),
                h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value,
            )
            for h in http.header_map.headers
        )
    return tuple(http.headers.items())


def _address(peer: AttributeContextPeer | None) -> str:
    if peer is None or peer.address is None or peer.address.socket_address is None:
        return ""
    return peer.address.socket_address.address


def check_input(request: CheckRequest) -> CheckInput:
    """What Envoy told us about the request. A ``CheckRequest`` without an HTTP request
    (the network ext_authz filter) has no method: it is refused by the limits filter like
    any request with an unknown method."""
    attributes = request.attributes
    http = (
        attributes.request.http
        if attributes is not None and attributes.request is not None
        else None
    )
    if http is None:
        return CheckInput(method="", target="/", headers=())
    headers = _headers(http)
    body: bytes | None = None
    if http.raw_body:
        body = http.raw_body
    elif http.body:
        body = http.body.encode("utf-8", "surrogateescape")
    partial = any(n == PARTIAL_BODY_HEADER and v.lower() == "true" for n, v in headers)
    if body is None and any(n == PARTIAL_BODY_HEADER for n, _ in headers):
        body = b""  # Envoy buffered the body and it was empty
    return CheckInput(
        method=http.method,
        target=http.path or "/",
        headers=headers,
        client_address=_address(attributes.source if attributes is not None else None),
        scheme=http.scheme,
        protocol=http.protocol,
        request_id=http.id,
        body=body,
        body_partial=partial,
        size=http.size,
    )


def _option(name: str, value: str, action: HeaderValueOptionHeaderAppendAction) -> Any:
    return HeaderValueOption(header=HeaderValue(key=name, value=value), append_action=action)


def _rpc_code(status: int) -> int:
    if status == 401:
        return _UNAUTHENTICATED
    if status >= 500:
        return _INTERNAL
    return _PERMISSION_DENIED


def check_response(decision: Decision) -> CheckResponse:
    """The ``CheckResponse`` for ``decision``, with the decision as dynamic metadata."""
    metadata = Struct.from_dict(decision.metadata())
    if decision.allowed:
        return CheckResponse(
            status=Status(code=_OK),
            ok_response=OkHttpResponse(
                headers=[
                    *(_option(n, v, _OVERWRITE) for n, v in decision.upstream_set),
                    *(_option(n, v, _APPEND) for n, v in decision.upstream_append),
                ],
                headers_to_remove=list(decision.upstream_remove),
            ),
            dynamic_metadata=metadata,
        )
    return CheckResponse(
        status=Status(code=_rpc_code(decision.status)),
        denied_response=DeniedHttpResponse(
            status=HttpStatus(code=StatusCode(decision.status)),
            headers=[_option(n, v, _OVERWRITE) for n, v in decision.headers],
            body=decision.body.decode("utf-8", "replace"),
        ),
        dynamic_metadata=metadata,
    )


def parse_check_request(data: bytes) -> CheckRequest:
    """Deserializer for grpcio."""
    return CheckRequest.parse(data)


def serialize_check_response(response: CheckResponse) -> bytes:
    """Serializer for grpcio."""
    return bytes(response)
