"""The fast upb classes agree with ``envoy-data-plane`` on the wire, both ways: what the
betterproto2 types (Envoy's schema) write, the gRPC services read; what they write,
the betterproto2 types read back as intended."""

from __future__ import annotations

from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    HeaderMap,
    HeaderValue,
    HeaderValueOptionHeaderAppendAction,
    Metadata,
    SocketAddress,
)
from envoy_data_plane.envoy.service.auth import v3 as auth
from envoy_data_plane.envoy.service.ext_proc import v3 as ext_proc_v3
from envoy_data_plane.google.protobuf import Struct
from hypothesis import given, settings
from hypothesis import strategies as st

from wardgate.envoy import grpc_authz, wire
from wardgate.envoy.decision import Decision
from wardgate.envoy.ext_proc import _immediate


def _check_request(headers: dict[str, str], body: bytes, raw: bool) -> auth.CheckRequest:
    http = auth.AttributeContextHttpRequest(
        id="42",
        method="POST",
        path="/items?x=1",
        host="api.example.com",
        scheme="https",
        protocol="HTTP/2",
        size=len(body),
        raw_body=body,
    )
    if raw:
        http.header_map = HeaderMap(
            headers=[HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()]
        )
    else:
        http.headers = dict(headers)
    return auth.CheckRequest(
        attributes=auth.AttributeContext(
            source=auth.AttributeContextPeer(
                address=Address(socket_address=SocketAddress(address="203.0.113.9", port_value=7))
            ),
            request=auth.AttributeContextRequest(http=http),
            context_extensions={"route": "a"},
            metadata_context=Metadata(
                filter_metadata={"envoy.filters.http.jwt_authn": Struct.from_dict({"sub": "x"})}
            ),
        )
    )


names = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20)
values = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF), max_size=40)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(names, values, max_size=8), st.binary(max_size=300), st.booleans())
def test_check_request_written_by_envoy_schema_reads_the_same(headers, body, raw):
    original = _check_request(headers, body, raw)
    data = bytes(original)
    parsed = wire.CheckRequest.FromString(data)
    check = grpc_authz.check_input(parsed)
    assert dict(check.headers) == headers
    assert check.body == (body or None)
    assert check.method == "POST" and check.target == "/items?x=1"
    assert check.client_address == "203.0.113.9"
    assert check.protocol == "HTTP/2" and check.scheme == "https" and check.size == len(body)
    # Nothing is lost: written back by upb, the Envoy schema reads the same message.
    again = auth.CheckRequest.parse(parsed.SerializeToString())
    assert again.to_dict() == original.to_dict()


def test_allowed_check_response_reads_as_intended_with_the_envoy_schema():
    decision = Decision(
        allowed=True,
        status=200,
        request_id="r1",
        upstream_set=(("x-claim-sub", "alice"),),
        upstream_append=(("x-multi", "2"),),
        upstream_remove=("authorization",),
        policy_digest="abc",
        policy_generation=3,
    )
    data = grpc_authz.serialize_check_response(grpc_authz.check_response(decision))
    response = auth.CheckResponse.parse(data)
    assert response.status.code == 0
    ok = response.ok_response
    assert [(h.header.key, h.header.value, h.append_action) for h in ok.headers] == [
        ("x-claim-sub", "alice", HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD),
        ("x-multi", "2", HeaderValueOptionHeaderAppendAction.APPEND_IF_EXISTS_OR_ADD),
    ]
    assert ok.headers_to_remove == ["authorization"]
    metadata = response.dynamic_metadata.to_dict()
    assert metadata["wardgate"]["decision"] == "allow"
    assert metadata["wardgate"]["policy_generation"] == 3


def test_denied_check_response_and_immediate_response_carry_status_headers_body():
    decision = Decision(
        allowed=False,
        status=431,
        request_id="r2",
        filter="limits",
        reason="too_many_headers",
        rule_ids=("limits.maxHeadersCount",),
        headers=(("content-type", "application/problem+json"), ("x-request-id", "r2")),
        body=b'{"status":431}\n',
    )
    data = grpc_authz.serialize_check_response(grpc_authz.check_response(decision))
    response = auth.CheckResponse.parse(data)
    assert response.status.code == 7  # PERMISSION_DENIED
    denied = response.denied_response
    assert int(denied.status.code) == 431
    assert {h.header.key: h.header.value for h in denied.headers}["x-request-id"] == "r2"
    assert denied.body == '{"status":431}\n'
    assert response.dynamic_metadata.to_dict()["wardgate"]["rule_ids"] == ["limits.maxHeadersCount"]
    processing = ext_proc_v3.ProcessingResponse.parse(_immediate(decision).SerializeToString())
    immediate = processing.immediate_response
    assert int(immediate.status.code) == 431
    assert immediate.body == b'{"status":431}\n'
    assert {h.header.key: h.header.raw_value for h in immediate.headers.set_headers}[
        "content-type"
    ] == b"application/problem+json"


def test_processing_request_headers_read_the_same():
    original = ext_proc_v3.ProcessingRequest(
        request_headers=ext_proc_v3.HttpHeaders(
            headers=HeaderMap(
                headers=[
                    HeaderValue(key=":method", raw_value=b"GET"),
                    HeaderValue(key=":path", raw_value=b"/a?b"),
                    HeaderValue(key="x-a", raw_value=b"1"),
                ]
            ),
            end_of_stream=True,
        )
    )
    parsed = wire.ProcessingRequest.FromString(bytes(original))
    assert parsed.HasField("request_headers")
    assert parsed.request_headers.end_of_stream
    assert [(h.key, h.raw_value) for h in parsed.request_headers.headers.headers] == [
        (":method", b"GET"),
        (":path", b"/a?b"),
        ("x-a", b"1"),
    ]
