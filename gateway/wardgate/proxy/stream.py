"""One HTTP/1.1 request on its way through the proxy: what Envoy's connection manager calls
the active stream.

An :class:`ActiveStream` holds the client's request, the filters' view of it, the
:class:`~wardgate.runtime.RequestPipeline` (one policy generation for the whole request)
and the :class:`~wardgate.proxy.exchange.Exchange` bookkeeping. Every answer the gateway
makes itself goes through :meth:`ActiveStream.local` (problem body or Envoy's text,
``x-request-id``, response header policy), whoever refuses: a filter, the framing checks,
the body cap, a failed upstream or a refused WebSocket upgrade. :meth:`ActiveStream.record`
writes the access-log record and metrics once the exchange is over."""

from __future__ import annotations

from aiohttp import web
from multidict import CIMultiDict

from wardgate.filters.api import HttpRequest, LocalReply
from wardgate.observability import metrics
from wardgate.observability.logs import AccessLog
from wardgate.observability.response_flags import ResponseFlag
from wardgate.proxy.exchange import SERVER_HEADER, Exchange, note_local_reply, record_exchange
from wardgate.proxy.timeouts import BodyClock
from wardgate.proxy.upstream import upstream_failure
from wardgate.runtime import CompiledPolicy, RequestPipeline


class ActiveStream:
    """One request's state from its headers to its access-log record."""

    __slots__ = ("access_log", "exchange", "http_request", "pipeline", "request", "upstream_host")

    def __init__(
        self,
        request: web.BaseRequest,
        pipeline: RequestPipeline,
        exchange: Exchange,
        access_log: AccessLog,
        upstream_host: str,
    ) -> None:
        self.request = request
        self.pipeline = pipeline
        self.http_request: HttpRequest = pipeline.request
        self.exchange = exchange
        self.access_log = access_log
        self.upstream_host = upstream_host

    @property
    def policy(self) -> CompiledPolicy:
        """The policy generation this request runs under, from its first byte to its last."""
        return self.pipeline.policy

    def local(self, reply: LocalReply, close: bool = False) -> web.Response:
        """The gateway's own answer: the reply rendered by the pipeline (response header
        policy applied), with ``server`` and this request's ``x-request-id``, booked on the
        exchange. ``close``: the request body may be unread, so the connection must not be
        parsed for a next request."""
        response = self.pipeline.local_response(reply)
        note_local_reply(self.exchange, reply)
        headers: CIMultiDict[str] = response.headers
        headers.setdefault("server", SERVER_HEADER)
        headers["x-request-id"] = self.http_request.request_id
        body = response.body or b""
        out = web.Response(status=response.status, body=body, headers=headers)
        if close:
            out.force_close()
        self.exchange.bytes_sent = len(body)
        return out

    def upstream_failed(self, flag: ResponseFlag, reason: str = "") -> web.Response:
        """Envoy's answer to an upstream failure (``UF``, ``UH``, ``UT``, ``UC``, ``UPE``),
        counted by flag."""
        metrics.UPSTREAM_FAILURES.labels(flag=flag).inc()
        return self.local(upstream_failure(flag, reason))

    def body_too_large(self, reply: LocalReply) -> web.Response:
        """The pipeline's 413, closing: the rest of the body is not read."""
        self.exchange.flag = ResponseFlag.NONE
        return self.local(reply, close=True)

    def body_read_failed(
        self,
        clock: BodyClock | None,
        flag: ResponseFlag = ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION,
    ) -> web.Response:
        """400 ``body_read_failed`` and close: the client's body could not be read; 408
        ``request_body_timeout`` when it did not arrive in time (the body clock ran out)."""
        if clock is not None and clock.timed_out:
            reply = LocalReply(
                408,
                "gateway",
                "request_body_timeout",
                "the request body did not arrive in time",
                response_flag=ResponseFlag.STREAM_IDLE_TIMEOUT,
            )
        else:
            reply = LocalReply(
                400,
                "gateway",
                "body_read_failed",
                "the request body could not be read",
                response_flag=flag,
            )
        return self.local(reply, close=True)

    def record(self) -> None:
        """Metrics and the access-log record of the finished exchange."""
        request = self.request
        headers = request.headers
        logged = self.access_log.enabled  # the two values only go to the access log
        record_exchange(
            self.access_log,
            self.upstream_host,
            request.method,
            headers.get("user-agent", "") if logged else "",
            headers.get("host", "") if logged else "",
            self.http_request,
            self.policy,
            self.exchange,
        )
