"""The bookkeeping of one request/response exchange, whatever the client's protocol
(HTTP/1.1 in :mod:`wardgate.proxy.handler`, HTTP/2 in :mod:`wardgate.proxy.h2`): what
happened (:class:`Exchange`), how a local reply is booked on it, and the metrics and
access-log record written once it is over (:func:`record_exchange`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from wardgate.filters.api import HttpRequest, LocalReply
from wardgate.observability import metrics
from wardgate.observability.logs import AccessLog, AccessRecord
from wardgate.observability.response_flags import ResponseFlag
from wardgate.proxy.upstream import UPSTREAM_FILTER
from wardgate.runtime import CompiledPolicy
from wardgate.runtime.identity import client_certificate_fields

SERVER_HEADER = "wardgate"
"""The ``server`` header of responses that do not carry the upstream's own."""


@dataclass(slots=True)
class Exchange:
    """Per-request bookkeeping for the access log and metrics."""

    start: float
    wall_start: float
    bytes_received: int = 0
    bytes_sent: int = 0
    status: int = 0
    flag: ResponseFlag = ResponseFlag.NONE
    replied_by: str = "upstream"
    reason: str = ""
    rule_ids: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()
    upstream_ms: int | None = None

    @classmethod
    def begin(cls) -> Exchange:
        """An exchange starting now."""
        return cls(start=time.monotonic(), wall_start=time.time())

    def client_gone(self) -> None:
        """The client went away before the exchange ended (``DC``; status 499 when no
        status was decided yet, as nginx and Envoy's logs have it)."""
        self.flag = self.flag or ResponseFlag.DOWNSTREAM_CONNECTION_TERMINATION
        self.status = self.status or 499


def note_local_reply(exchange: Exchange, reply: LocalReply) -> None:
    """Book a local reply on the exchange (status, who answered, why) for log and metrics."""
    exchange.status = reply.status
    exchange.replied_by = reply.filter if reply.filter != UPSTREAM_FILTER else "gateway"
    exchange.reason = reply.reason
    exchange.flag = reply.response_flag or exchange.flag
    exchange.rule_ids = tuple(v.rule_id for v in reply.violations)
    exchange.locations = tuple(v.location for v in reply.violations)


def record_exchange(
    access_log: AccessLog,
    upstream_host: str,
    method: str,
    user_agent: str,
    authority: str,
    http_request: HttpRequest,
    policy: CompiledPolicy,
    exchange: Exchange,
) -> None:
    """Metrics and the access-log record of one finished exchange, whatever the client's
    protocol (HTTP/1.1 or HTTP/2)."""
    duration = time.monotonic() - exchange.start
    metrics.observe_request_seconds(duration)
    metrics.count_request(exchange.status, exchange.replied_by)
    if http_request.findings:
        metrics.DETECTIONS.labels(filter=http_request.findings[0].rule_id.split(".")[0]).inc()
    if not access_log.enabled:
        return
    access_log.write(
        AccessRecord(
            start=exchange.wall_start,
            method=method,
            path=http_request.path,
            protocol=http_request.version,
            status=exchange.status,
            response_flags=exchange.flag,
            bytes_received=exchange.bytes_received,
            bytes_sent=exchange.bytes_sent,
            duration_ms=int(duration * 1000),
            upstream_service_time_ms=exchange.upstream_ms,
            forwarded_for=http_request.headers.get("x-forwarded-for", ""),
            user_agent=user_agent,
            request_id=http_request.request_id,
            authority=authority,
            upstream_host=upstream_host if exchange.upstream_ms is not None else "",
            client_address=http_request.client_address,
            replied_by=exchange.replied_by,
            reason=exchange.reason,
            rule_ids=exchange.rule_ids,
            locations=exchange.locations,
            policy_digest=policy.short_digest,
            policy_generation=policy.generation,
            findings=tuple(f"{v.rule_id}@{v.location}" for v in http_request.findings),
            client_certificate=client_certificate_fields(http_request.peer),
        )
    )
