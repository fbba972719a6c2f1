"""Envoy's ext_proc service, ``envoy.service.ext_proc.v3.ExternalProcessor/Process``: one
gRPC stream per HTTP request, one message per phase Envoy is configured to send.

Phases map onto the same :class:`RequestPipeline` as the native proxy:

* ``request_headers`` -> ``decode_headers``; a refusal is an ``immediate_response``;
  otherwise the header changes filters made go back as a header mutation;
* ``request_body`` (``BUFFERED``/``BUFFERED_PARTIAL``) -> ``decode_body`` (``end_of_stream``
  false: the body is incomplete) and the body cap;
* ``response_headers`` -> ``encode_headers`` (response header policy, response checks);
* ``response_body`` -> ``encode_body``: a refusal replaces the response, a filter that
  rewrote the body (error masking) sends it back as a body mutation.

An exception anywhere in a stream is an ``immediate_response`` 500: never continue on an
internal error.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from envoy_data_plane.envoy.config.core.v3 import (
    HeaderMap,
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
)
from envoy_data_plane.envoy.service.ext_proc.v3 import (
    BodyMutation,
    BodyResponse,
    CommonResponse,
    HeaderMutation,
    HeadersResponse,
    HttpBody,
    HttpHeaders,
    ImmediateResponse,
    ProcessingRequest,
    ProcessingResponse,
    TrailersResponse,
)
from envoy_data_plane.envoy.type.v3 import HttpStatus, StatusCode
from envoy_data_plane.google.protobuf import Struct
from multidict import CIMultiDict

from wardgate.envoy.decision import (
    ENVOY_FILTER,
    CheckInput,
    Decision,
    build_request,
    denied,
    header_changes,
    internal_error,
)
from wardgate.filters.api import HttpResponse, LocalReply
from wardgate.observability import metrics
from wardgate.runtime import CompiledPolicy, PolicyHolder, RequestPipeline

log = logging.getLogger("wardgate.envoy")

SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
METHOD = "Process"

_OVERWRITE = HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_APPEND = HeaderValueOptionHeaderAppendAction.APPEND_IF_EXISTS_OR_ADD


def _pairs(headers: HeaderMap | None) -> list[tuple[str, str]]:
    if headers is None:
        return []
    return [
        (h.key.lower(), h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value)
        for h in headers.headers
    ]


def _option(name: str, value: str, action: HeaderValueOptionHeaderAppendAction) -> Any:
    return HeaderValueOption(
        header=HeaderValue(key=name, raw_value=value.encode("utf-8", "replace")),
        append_action=action,
    )


def _mutation(before: list[tuple[str, str]], after: list[tuple[str, str]]) -> HeaderMutation | None:
    to_set, to_append, to_remove = header_changes(before, after)
    if not (to_set or to_append or to_remove):
        return None
    return HeaderMutation(
        set_headers=[
            *(_option(n, v, _OVERWRITE) for n, v in to_set),
            *(_option(n, v, _APPEND) for n, v in to_append),
        ],
        remove_headers=list(to_remove),
    )


def _immediate(decision: Decision) -> ProcessingResponse:
    headers = HeaderMutation(set_headers=[_option(n, v, _OVERWRITE) for n, v in decision.headers])
    return ProcessingResponse(
        immediate_response=ImmediateResponse(
            status=HttpStatus(code=StatusCode(decision.status)),
            headers=headers,
            body=decision.body,
            details=f"wardgate_{decision.filter}_{decision.reason}",
        ),
        # Top-level keys are metadata namespaces for ext_proc: the decision lands in
        # `wardgate` (the example's metadata_options.receiving_namespaces lists it).
        dynamic_metadata=Struct.from_dict(decision.metadata()),
    )


class ProcessStream:
    """One HTTP request's ext_proc stream. The policy is read once, at the first message."""

    def __init__(self, policy: CompiledPolicy) -> None:
        self.policy = policy
        self.pipeline: RequestPipeline | None = None
        self._request_headers: list[tuple[str, str]] = []
        self._response: HttpResponse | None = None
        self._response_before: list[tuple[str, str]] = []

    async def process(self, message: ProcessingRequest) -> ProcessingResponse:
        """The response to one phase message (raises on a message out of order)."""
        if message.request_headers is not None:
            return await self._request_headers_phase(message.request_headers)
        if message.request_body is not None:
            return await self._request_body_phase(message.request_body)
        if message.response_headers is not None:
            return self._response_headers_phase(message.response_headers)
        if message.response_body is not None:
            return self._response_body_phase(message.response_body)
        if message.request_trailers is not None:
            return ProcessingResponse(request_trailers=TrailersResponse())
        if message.response_trailers is not None:
            return ProcessingResponse(response_trailers=TrailersResponse())
        raise ValueError("empty ProcessingRequest")

    def _require_pipeline(self) -> RequestPipeline:
        if self.pipeline is None:
            raise ValueError("a body or response message before the request headers")
        return self.pipeline

    async def _request_headers_phase(self, message: HttpHeaders) -> ProcessingResponse:
        pairs = _pairs(message.headers)
        pseudo = {name: value for name, value in pairs if name[:1] == ":"}
        forwarded = [v for n, v in pairs if n == "x-forwarded-for"]
        check = CheckInput(
            method=pseudo.get(":method", ""),
            target=pseudo.get(":path", "/"),
            headers=tuple(pairs),
            client_address=forwarded[-1].rsplit(",", 1)[-1].strip() if forwarded else "",
            scheme=pseudo.get(":scheme", "http"),
        )
        request = build_request(check)
        pipeline = self.pipeline = RequestPipeline(self.policy, request)
        before = list(request.headers.items())
        reply = await pipeline.decode_headers()
        if reply is not None:
            return _immediate(denied(pipeline, reply))
        self._request_headers = list(request.headers.items())
        return ProcessingResponse(
            request_headers=HeadersResponse(
                response=CommonResponse(header_mutation=_mutation(before, self._request_headers))
            )
        )

    async def _request_body_phase(self, message: HttpBody) -> ProcessingResponse:
        pipeline = self._require_pipeline()
        policy = self.policy
        data = message.body
        reply: LocalReply | None = None
        if pipeline.needs_request_body:
            limit = policy.request_body_limit or 0
            complete = message.end_of_stream and len(data) <= limit
            reply = await pipeline.decode_body(data[:limit], complete)
        cap = policy.max_request_body_bytes
        if reply is None and cap is not None and len(data) > cap:
            reply = LocalReply(
                413, "limits", "body_too_large", f"the request body is larger than {cap} bytes"
            )
        if reply is not None:
            return _immediate(denied(pipeline, reply))
        after = list(pipeline.request.headers.items())
        mutation = _mutation(self._request_headers, after)
        self._request_headers = after
        return ProcessingResponse(
            request_body=BodyResponse(response=CommonResponse(header_mutation=mutation))
        )

    def _response_headers_phase(self, message: HttpHeaders) -> ProcessingResponse:
        pipeline = self._require_pipeline()
        pairs = _pairs(message.headers)
        status_text = next((v for n, v in pairs if n == ":status"), "200")
        before = [(n, v) for n, v in pairs if n[:1] != ":"]
        response = self._response = HttpResponse(
            status=int(status_text) if status_text.isdigit() else 502,
            headers=CIMultiDict(before),
        )
        reply = pipeline.encode_headers(response)
        if reply is not None:
            return _immediate(denied(pipeline, reply))
        return ProcessingResponse(
            response_headers=HeadersResponse(
                response=CommonResponse(
                    header_mutation=_mutation(before, list(response.headers.items()))
                )
            )
        )

    def _response_body_phase(self, message: HttpBody) -> ProcessingResponse:
        pipeline = self._require_pipeline()
        response = self._response
        if response is None:
            raise ValueError("a response body before the response headers")
        if not pipeline.needs_response_body:
            return ProcessingResponse(response_body=BodyResponse(response=CommonResponse()))
        limit = self.policy.response_body_limit or 0
        data = message.body
        prefix = data[:limit]
        reply = pipeline.encode_body(response, prefix, message.end_of_stream and len(data) <= limit)
        if reply is not None:
            return _immediate(denied(pipeline, reply))
        mutation = None
        if response.body is not None and response.body is not prefix:
            mutation = BodyMutation(body=response.body + data[limit:])
        return ProcessingResponse(
            response_body=BodyResponse(response=CommonResponse(body_mutation=mutation))
        )


async def process(
    holder: PolicyHolder, messages: AsyncIterator[ProcessingRequest]
) -> AsyncIterator[ProcessingResponse]:
    """The stream: one response per message, an immediate 500 on any exception."""
    stream = ProcessStream(holder.current)
    async for message in messages:
        try:
            response = await stream.process(message)
        except Exception as exc:
            metrics.FILTER_ERRORS.labels(filter=ENVOY_FILTER).inc()
            log.error(
                "ext_proc message failed; request refused (fail closed)",
                extra={"wardgate": {"error": type(exc).__name__}},
            )
            request_id = (
                stream.pipeline.request.request_id if stream.pipeline else str(uuid.uuid4())
            )
            yield _immediate(internal_error(stream.policy, request_id, "internal_error"))
            return
        yield response
        if response.immediate_response is not None:
            return


def parse_processing_request(data: bytes) -> ProcessingRequest:
    return ProcessingRequest.parse(data)


def serialize_processing_response(response: ProcessingResponse) -> bytes:
    return bytes(response)
