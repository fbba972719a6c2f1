"""What a compiled policy cannot get over Envoy's protocols, for ``wardgate validate`` and
the docs. Derived from static facts of the chain (which filters read bodies, which have
response phases), never from a request."""

from __future__ import annotations

from wardgate.filters.api import FilterConfig, HttpFilter
from wardgate.runtime import CompiledPolicy


def _has_response_phase(config: FilterConfig) -> bool:
    flt = type(config.create_filter())
    return (
        flt.encode_headers is not HttpFilter.encode_headers
        or flt.encode_body is not HttpFilter.encode_body
        or config.response_body_limit is not None
    )


def envoy_limitations(policy: CompiledPolicy) -> tuple[str, ...]:
    """One line per thing this policy checks that a protocol does not carry."""
    notes: list[str] = []
    body_readers = [c.name for c in policy.filters if c.request_body_limit is not None]
    if body_readers:
        notes.append(
            f"ext_authz: {', '.join(body_readers)} read the request body (up to "
            f"{policy.request_body_limit} bytes): set Envoy's with_request_body "
            f"(max_request_bytes >= {policy.request_body_limit}, allow_partial_message: "
            "true); without it they see no body and apply their rule for uninspected bodies"
        )
    responders = [c.name for c in policy.filters if _has_response_phase(c)]
    if responders:
        notes.append(
            f"ext_authz: {', '.join(responders)} have response phases (response header "
            "changes, response checks): ext_authz never sees upstream responses, so these "
            "apply to Wardgate's refusals only; ext_proc applies them to upstream responses"
        )
    if policy.max_request_body_bytes is not None:
        notes.append(
            f"ext_authz: the body cap ({policy.max_request_body_bytes} bytes) is checked on "
            "Content-Length and on the body Envoy buffers; a chunked body longer than "
            "Envoy's max_request_bytes is not counted past it"
        )
    notes.append(
        "ext_authz (HTTP): upstream header changes arrive only for names Envoy's "
        "allowed_upstream_headers matches; header count and size limits also count the "
        "headers Envoy adds (x-request-id, x-forwarded-*, x-envoy-*)"
    )
    return tuple(notes)
