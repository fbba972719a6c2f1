"""Envoy's ext_proc service, ``envoy.service.ext_proc.v3.ExternalProcessor/Process``: one
gRPC stream per HTTP request, one message per phase Envoy is configured to send.

Phases map onto the same :class:`RequestPipeline` as the native proxy:

* ``request_headers`` -> ``decode_headers``; a refusal is an ``immediate_response``;
  otherwise the header changes filters made go back as a header mutation;
* ``request_body`` (``BUFFERED``/``BUFFERED_PARTIAL``) -> the pipeline's body phase and
  body cap (``end_of_stream`` false: the body is incomplete); a request whose headers end
  the stream runs the body phase on no body right away;
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

from multidict import CIMultiDict

from wardgate.envoy import wire
from wardgate.envoy.decision import (
    ENVOY_FILTER,
    CheckInput,
    Decision,
    build_request,
    denied,
    header_changes,
    internal_error,
)
from wardgate.envoy.grpc_authz import APPEND, OVERWRITE
from wardgate.filters.api import HttpResponse
from wardgate.observability import metrics
from wardgate.runtime import CompiledPolicy, PolicyHolder, RequestPipeline

log = logging.getLogger("wardgate.envoy")

SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"
METHOD = "Process"


def _pairs(headers: Any) -> list[tuple[str, str]]:
    """A ``HeaderMap``'s fields (ext_proc sends values as ``raw_value`` bytes)."""
    return [
        (h.key.lower(), h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value)
        for h in headers.headers
    ]


def _client_address(pairs: list[tuple[str, str]]) -> str:
    """Envoy sets ``x-envoy-external-address`` for external requests (removing a client's
    copy); otherwise the last ``x-forwarded-for`` entry is the one Envoy appended."""
    external = [v for n, v in pairs if n == "x-envoy-external-address"]
    if external:
        return external[-1].strip()
    forwarded = [v for n, v in pairs if n == "x-forwarded-for"]
    return forwarded[-1].rsplit(",", 1)[-1].strip() if forwarded else ""


def _add(options: Any, name: str, value: str, action: int) -> None:
    option = options.add()
    option.header.key = name
    option.header.raw_value = value.encode("utf-8", "replace")
    option.append_action = action


def _mutate(common: Any, before: list[tuple[str, str]], after: list[tuple[str, str]]) -> None:
    """Write the header changes turning ``before`` into ``after`` into a CommonResponse."""
    to_set, to_append, to_remove = header_changes(before, after)
    if not (to_set or to_append or to_remove):
        return
    mutation = common.header_mutation
    for name, value in to_set:
        _add(mutation.set_headers, name, value, OVERWRITE)
    for name, value in to_append:
        _add(mutation.set_headers, name, value, APPEND)
    mutation.remove_headers.extend(to_remove)


def _immediate(decision: Decision) -> Any:
    response = wire.ProcessingResponse()
    immediate = response.immediate_response
    immediate.status.code = decision.status
    for name, value in decision.headers:
        _add(immediate.headers.set_headers, name, value, OVERWRITE)
    immediate.body = decision.body
    immediate.details = f"wardgate_{decision.filter}_{decision.reason}"
    # Top-level keys are metadata namespaces for ext_proc: the decision lands in
    # `wardgate` (the example's metadata_options.receiving_namespaces lists it).
    response.dynamic_metadata.update(decision.metadata())
    return response


class ProcessStream:
    """One HTTP request's ext_proc stream. The policy is read once, at the first message."""

    def __init__(self, policy: CompiledPolicy) -> None:
        self.policy = policy
        self.pipeline: RequestPipeline | None = None
        self._request_headers: list[tuple[str, str]] = []
        self._response: HttpResponse | None = None

    async def process(self, message: Any) -> Any:
        """The ``wire.ProcessingResponse`` to one phase message (raises on a message out of
        order)."""
        if message.HasField("request_headers"):
            return await self._request_headers_phase(message.request_headers)
        if message.HasField("request_body"):
            return await self._request_body_phase(message.request_body)
        if message.HasField("response_headers"):
            return self._response_headers_phase(message.response_headers)
        if message.HasField("response_body"):
            return self._response_body_phase(message.response_body)
        response = wire.ProcessingResponse()
        if message.HasField("request_trailers"):
            response.request_trailers.SetInParent()
            return response
        if message.HasField("response_trailers"):
            response.response_trailers.SetInParent()
            return response
        raise ValueError("empty ProcessingRequest")

    def _require_pipeline(self) -> RequestPipeline:
        if self.pipeline is None:
            raise ValueError("a body or response message before the request headers")
        return self.pipeline

    async def _request_headers_phase(self, message: Any) -> Any:
        pairs = _pairs(message.headers)
        pseudo = {name: value for name, value in pairs if name[:1] == ":"}
        check = CheckInput(
            method=pseudo.get(":method", ""),
            target=pseudo.get(":path", "/"),
            headers=tuple(pairs),
            client_address=_client_address(pairs),
            scheme=pseudo.get(":scheme", "http"),
        )
        request = build_request(check)
        pipeline = self.pipeline = RequestPipeline(self.policy, request)
        before = list(request.headers.items())
        if message.end_of_stream:
            # No body follows: the whole sequence runs now (a filter may require a body).
            reply = await pipeline.decode_request(b"", True)
        else:
            reply = await pipeline.decode_headers()
        if reply is not None:
            return _immediate(denied(pipeline, reply))
        self._request_headers = list(request.headers.items())
        response = wire.ProcessingResponse()
        response.request_headers.response.SetInParent()
        _mutate(response.request_headers.response, before, self._request_headers)
        return response

    async def _request_body_phase(self, message: Any) -> Any:
        pipeline = self._require_pipeline()
        # BUFFERED (the whole body) or BUFFERED_PARTIAL (a prefix: not end_of_stream).
        reply = await pipeline.decode_request_body(message.body, message.end_of_stream)
        if reply is not None:
            return _immediate(denied(pipeline, reply))
        after = list(pipeline.request.headers.items())
        response = wire.ProcessingResponse()
        response.request_body.response.SetInParent()
        _mutate(response.request_body.response, self._request_headers, after)
        self._request_headers = after
        return response

    def _response_headers_phase(self, message: Any) -> Any:
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
        out = wire.ProcessingResponse()
        out.response_headers.response.SetInParent()
        _mutate(out.response_headers.response, before, list(response.headers.items()))
        return out

    def _response_body_phase(self, message: Any) -> Any:
        pipeline = self._require_pipeline()
        response = self._response
        if response is None:
            raise ValueError("a response body before the response headers")
        out = wire.ProcessingResponse()
        out.response_body.response.SetInParent()
        if not pipeline.needs_response_body:
            return out
        limit = self.policy.response_body_limit or 0
        data = message.body
        prefix = data[:limit]
        reply = pipeline.encode_body(response, prefix, message.end_of_stream and len(data) <= limit)
        if reply is not None:
            return _immediate(denied(pipeline, reply))
        if response.body is not None and response.body is not prefix:
            out.response_body.response.body_mutation.body = response.body + data[limit:]
        return out


async def process(holder: PolicyHolder, messages: AsyncIterator[Any]) -> AsyncIterator[Any]:
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
        if response.HasField("immediate_response"):
            return


def parse_processing_request(data: bytes) -> Any:
    return wire.ProcessingRequest.FromString(data)


def serialize_processing_response(response: Any) -> bytes:
    return bytes(response.SerializeToString())
