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
            f"(max_request_bytes >= {(policy.request_body_limit or 0) + 1}, one more than "
            "they read so a cut body is always seen as cut; allow_partial_message: true); "
            "without it they see no body and apply their rule for uninspected bodies"
        )
        notes.append(
            "ext_authz (HTTP): without with_request_body Envoy sends neither the body nor "
            "its length, so Wardgate cannot tell a request has one and the body checks are "
            "skipped: keep with_request_body set (as in the examples), or use gRPC, which "
            "refuses such bodies as uninspected"
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
            "Envoy's max_request_bytes is not counted past it; HTTP ext_authz without "
            "with_request_body gets no Content-Length at all (use gRPC, or set "
            "with_request_body)"
        )
    names = upstream_header_names(policy)
    if names:
        notes.append(
            "ext_authz (HTTP): Envoy copies Wardgate's upstream headers only for names its "
            f"allowed_upstream_headers matches; list {', '.join(names)} there, or a value "
            "the client sent under that name reaches the upstream unchanged (gRPC ext_authz "
            "and ext_proc need no list)"
        )
    notes.append(
        "ext_authz: header count and size limits also count the headers Envoy adds before "
        "the check (x-request-id, x-forwarded-*, x-envoy-*)"
    )
    return tuple(notes)


def upstream_header_names(policy: CompiledPolicy) -> tuple[str, ...]:
    """Header names the policy sets on upstream requests (read from the policy document:
    the filter contract has no such list): JWT ``claimToHeaders`` and
    ``forwardPayloadHeader``, and ``headers.request.add``."""
    spec = policy.spec
    names: list[str] = [h.name for h in spec.headers.request.add]
    if spec.jwt is not None:
        for provider in spec.jwt.providers.values():
            names.extend(c.header_name for c in provider.claim_to_headers)
            if provider.forward_payload_header:
                names.append(provider.forward_payload_header)
    return tuple(dict.fromkeys(names))
