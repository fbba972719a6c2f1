"""Running one request through a policy's filter chain: the adapter-independent part.

:class:`RequestPipeline` owns the request sequence every adapter follows (the native
proxy over HTTP/1.1 and HTTP/2, HTTP and gRPC ext_authz, ext_proc, ``wardgate explain``):

1. :meth:`~RequestPipeline.decode_headers`;
2. the body phase on the bytes the adapter has (:meth:`~RequestPipeline.decode_request_body`:
   filters see at most ``request_body_limit`` bytes, ``complete`` only when that is the
   whole body; no body at all is ``(b"", True)``, so a filter can refuse a missing one);
3. the body cap (:meth:`~RequestPipeline.check_body_size`), on what was buffered and again
   on every byte an adapter streams on, always the same 413 (:func:`body_too_large`).

Adapters only supply bytes and carry out the verdict (a :class:`LocalReply` or ``None``:
continue); :meth:`~RequestPipeline.decode_request` runs 1-3 for those that have the whole
request at once. The response phases (``encode_*``) and :meth:`~RequestPipeline.local_response`
(the refusal with response header policy applied) complete the exchange."""

from __future__ import annotations

import logging

from multidict import CIMultiDict

from wardgate.filters.api import (
    FilterConfig,
    HttpFilter,
    HttpRequest,
    HttpResponse,
    LocalReply,
)
from wardgate.filters.limits import body_too_large
from wardgate.observability import metrics
from wardgate.runtime.compiled import CompiledPolicy

log = logging.getLogger("wardgate.chain")


def filter_failure(config: FilterConfig, phase: str, exc: BaseException) -> LocalReply:
    """Fail closed: an exception inside a filter refuses the request (500), is counted and
    logged with its type only (exception messages can carry request data)."""
    metrics.FILTER_ERRORS.labels(filter=config.name).inc()
    log.error(
        "filter raised; request refused (fail closed)",
        extra={"wardgate": {"filter": config.name, "phase": phase, "error": type(exc).__name__}},
    )
    return LocalReply(
        status=500,
        filter=config.name,
        reason="filter_error",
        detail="the request could not be checked",
    )


class RequestPipeline:
    """One request's pass through one policy. Create it with the policy read once from the
    holder; every phase of this request then uses that same generation."""

    __slots__ = ("_filters", "policy", "request")

    def __init__(self, policy: CompiledPolicy, request: HttpRequest) -> None:
        self.policy = policy
        self.request = request
        self._filters: list[tuple[FilterConfig, HttpFilter]] = [
            (config, config.create_filter()) for config in policy.filters
        ]

    @property
    def needs_response_body(self) -> bool:
        return self.policy.response_body_limit is not None

    def response_body_limit_for(self, response: HttpResponse) -> int | None:
        """Bytes of this response's body to buffer: the largest limit among filters that
        want it (``HttpFilter.wants_response_body``); ``None``: stream it unbuffered. A
        filter that fails here is taken as wanting the body (its ``encode_body`` then
        decides, fail closed)."""
        limit: int | None = None
        for config, flt in self._filters:
            wanted = config.response_body_limit
            if wanted is None:
                continue
            try:
                wants = flt.wants_response_body(self.request, response)
            except Exception:
                wants = True
            if wants and (limit is None or wanted > limit):
                limit = wanted
        return limit

    async def decode_headers(self) -> LocalReply | None:
        for config, flt in self._filters:
            try:
                reply = await flt.decode_headers(self.request)
            except Exception as exc:
                return filter_failure(config, "decode_headers", exc)
            if reply is not None:
                return reply
        return None

    async def decode_request(self, body: bytes, complete: bool = True) -> LocalReply | None:
        """The whole request sequence for an adapter that has the request at once: headers,
        then the body phase on ``body`` (``complete``: nothing more follows), then the cap."""
        reply = await self.decode_headers()
        if reply is None:
            reply = await self.decode_request_body(body, complete)
        return reply

    async def decode_request_body(self, data: bytes, complete: bool) -> LocalReply | None:
        """The body phase on the body bytes the adapter buffered (``complete``: ``data`` is
        the whole body), then the cap on ``len(data)``. Adapters read up to
        ``request_body_limit + 1`` bytes when a filter wants the body: the extra byte tells
        a body over the limit without waiting for its end. ``(b"", True)`` is a request
        without a body: the body phase still runs (a filter may require one)."""
        reply = await self.inspect_body(data, complete)
        if reply is None:
            reply = self.check_body_size(len(data))
        return reply

    async def inspect_body(self, data: bytes, complete: bool) -> LocalReply | None:
        """The body filters on the first ``request_body_limit`` bytes of ``data`` (complete
        only when ``data`` is the whole body and fits); nothing when no filter wants the
        body. Without the cap: for gRPC the cap is per message (the adapter's)."""
        limit = self.policy.request_body_limit
        if limit is None:
            return None
        return await self.decode_body(data[:limit], complete and len(data) <= limit)

    def check_body_size(self, size: int) -> LocalReply | None:
        """The 413 when ``size`` request body bytes (buffered, declared or counted while
        streaming) are over the policy's cap, else ``None``."""
        cap = self.policy.max_request_body_bytes
        return body_too_large(cap) if cap is not None and size > cap else None

    async def decode_body(self, body: bytes, complete: bool) -> LocalReply | None:
        """Run the body phase for filters that asked for the body. ``body`` is at most
        ``policy.request_body_limit`` bytes; ``complete`` says whether it is all of it."""
        self.request.body = body
        self.request.body_complete = complete
        for config, flt in self._filters:
            if config.request_body_limit is None:
                continue
            try:
                reply = await flt.decode_body(self.request, body, complete)
            except Exception as exc:
                return filter_failure(config, "decode_body", exc)
            if reply is not None:
                return reply
        return None

    def encode_headers(self, response: HttpResponse) -> LocalReply | None:
        for config, flt in reversed(self._filters):
            try:
                reply = flt.encode_headers(self.request, response)
            except Exception as exc:
                return filter_failure(config, "encode_headers", exc)
            if reply is not None:
                return reply
        return None

    def encode_body(self, response: HttpResponse, body: bytes, complete: bool) -> LocalReply | None:
        response.body = body
        response.body_complete = complete
        for config, flt in reversed(self._filters):
            own = config.response_body_limit
            if own is None:
                continue
            # Each filter sees at most the prefix it asked for, and a cut body as cut, even
            # when another filter asked for more.
            view, view_complete = (body[:own], False) if len(body) > own else (body, complete)
            try:
                reply = flt.encode_body(self.request, response, view, view_complete)
            except Exception as exc:
                return filter_failure(config, "encode_body", exc)
            if reply is not None:
                return reply
        return None

    def local_response(self, reply: LocalReply) -> HttpResponse:
        """The response for a local reply, with the encode-header phase applied (so response
        header policy applies to refusals too). A filter refusing a local reply again is
        ignored: a refusal is already final."""
        headers: CIMultiDict[str] = CIMultiDict(reply.headers)
        body = reply.render_body(self.request.request_id)
        headers["content-type"] = reply.content_type
        response = HttpResponse(status=reply.status, headers=headers, body=body, local=True)
        for _config, flt in reversed(self._filters):
            try:
                flt.encode_headers(self.request, response)
            except Exception:  # noqa: S112 - the refusal stands whatever a filter does
                continue
        return response
