"""Structured logs: the gateway log and the access log, in Elastic Common Schema JSON, or
the access log in Envoy's default format.

Contract: nothing here ever writes a header value other than the few listed in
:data:`LOGGED_REQUEST_HEADERS` (never ``authorization``, ``cookie`` or tokens), a query
string, or a body. The path is logged without its query: query strings carry tokens
(``access_token``) and personal data."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any, Literal

from wardgate import __version__

ECS_VERSION = "8.11.0"

AccessLogFormat = Literal["ecs", "envoy", "envoy-wardgate", "off"]


@dataclass(slots=True)
class AccessRecord:
    """What the access log says about one request."""

    start: float
    method: str
    path: str
    protocol: str
    status: int
    response_flags: str
    bytes_received: int
    bytes_sent: int
    duration_ms: int
    upstream_service_time_ms: int | None
    forwarded_for: str
    user_agent: str
    request_id: str
    authority: str
    upstream_host: str
    client_address: str
    replied_by: str
    reason: str
    rule_ids: tuple[str, ...]
    locations: tuple[str, ...]
    policy_digest: str
    policy_generation: int
    findings: tuple[str, ...] = ()
    client_certificate: dict[str, object] | None = None
    """ECS ``tls.client.*`` fields of the verified client certificate (mutual TLS)."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _printable(text: str, limit: int = 512) -> str:
    """Cap and escape client-controlled text so it cannot forge log lines."""
    text = text[:limit]
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def ecs_access(record: AccessRecord) -> str:
    doc: dict[str, Any] = {
        "@timestamp": _iso(record.start),
        "ecs.version": ECS_VERSION,
        "event.dataset": "wardgate.access",
        "event.kind": "event",
        "event.outcome": "failure" if record.status >= 400 else "success",
        "event.duration": record.duration_ms * 1_000_000,
        "http.request.method": _printable(record.method, 32),
        "http.request.id": _printable(record.request_id, 128),
        "http.request.bytes": record.bytes_received,
        "http.response.status_code": record.status,
        "http.response.bytes": record.bytes_sent,
        "http.version": record.protocol.removeprefix("HTTP/"),
        "url.path": _printable(record.path),
        "url.domain": _printable(record.authority, 256),
        "user_agent.original": _printable(record.user_agent),
        "source.address": record.client_address,
        "client.address": record.client_address,
        "destination.address": record.upstream_host,
        "wardgate": {
            "replied_by": record.replied_by,
            "response_flags": record.response_flags or "-",
            "reason": record.reason,
            "rule_ids": list(record.rule_ids),
            "locations": [_printable(loc, 256) for loc in record.locations],
            "policy": {"digest": record.policy_digest, "generation": record.policy_generation},
        },
    }
    if record.upstream_service_time_ms is not None:
        doc["wardgate"]["upstream_service_time_ms"] = record.upstream_service_time_ms
    if record.findings:
        doc["wardgate"]["detected"] = list(record.findings)
    if record.client_certificate is not None:
        doc["tls.established"] = True
        for key, value in record.client_certificate.items():
            doc[f"tls.client.{key}"] = value
    return json.dumps(doc, separators=(",", ":"))


def envoy_access(record: AccessRecord) -> str:
    """Envoy's default access-log format (``%START_TIME%`` ... ``%UPSTREAM_HOST%``). The
    path is written without its query string (a deliberate difference, see RATIONALE)."""

    def dash(value: str | int | None) -> str:
        return "-" if value in (None, "") else str(value)

    return (
        f'[{_iso(record.start)}] "{_printable(record.method, 32)} {_printable(record.path)} '
        f'{record.protocol}" {record.status} {record.response_flags or "-"} '
        f"{record.bytes_received} {record.bytes_sent} {record.duration_ms} "
        f"{dash(record.upstream_service_time_ms)} "
        f'"{dash(_printable(record.forwarded_for))}" "{dash(_printable(record.user_agent))}" '
        f'"{dash(_printable(record.request_id, 128))}" "{dash(_printable(record.authority))}" '
        f'"{dash(record.upstream_host)}"'
    )


def envoy_wardgate_access(record: AccessRecord) -> str:
    """Envoy's default line followed by what Envoy would print for
    ``"%DYNAMIC_METADATA(wardgate:replied_by)%" "%DYNAMIC_METADATA(wardgate:reason)%"
    "%DYNAMIC_METADATA(wardgate:rule_ids)%" "%DYNAMIC_METADATA(wardgate:locations)%"
    "%DYNAMIC_METADATA(wardgate:detected)%"``: who replied, the reason code, the refusing
    rules and their locations, and detect-mode findings (``rule@location``), lists joined
    with ``,`` and ``-`` when empty. Never a value: locations are names and paths."""

    def listed(items: tuple[str, ...]) -> str:
        return ",".join(_printable(item, 256).replace('"', "%22") for item in items) or "-"

    return (
        f'{envoy_access(record)} "{record.replied_by or "-"}" "{record.reason or "-"}" '
        f'"{listed(record.rule_ids)}" "{listed(record.locations)}" "{listed(record.findings)}"'
    )


_RENDERERS = {"ecs": ecs_access, "envoy": envoy_access, "envoy-wardgate": envoy_wardgate_access}


class AccessLog:
    """Writes one line per request to a stream (stdout by default)."""

    def __init__(self, fmt: AccessLogFormat = "ecs", stream: IO[str] | None = None) -> None:
        self.format = fmt
        self.stream = stream if stream is not None else sys.stdout
        self._render = _RENDERERS.get(fmt, envoy_access)

    @property
    def enabled(self) -> bool:
        return self.format != "off"

    def write(self, record: AccessRecord) -> None:
        if self.format == "off":
            return
        self.stream.write(self._render(record) + "\n")
        self.stream.flush()


class EcsFormatter(logging.Formatter):
    """The gateway log as ECS JSON. Extra fields go under the ``wardgate`` key via
    ``extra={"wardgate": {...}}``; exception messages are not logged, only their type and
    traceback frames (messages can carry request data)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "@timestamp": _iso(record.created),
            "ecs.version": ECS_VERSION,
            "event.dataset": "wardgate.gateway",
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "message": record.getMessage(),
            "service.name": "wardgate",
            "service.version": __version__,
            "process.pid": record.process,
        }
        extra = getattr(record, "wardgate", None)
        if isinstance(extra, dict):
            doc["wardgate"] = extra
        if record.exc_info and record.exc_info[0] is not None:
            doc["error.type"] = record.exc_info[0].__name__
        return json.dumps(doc, separators=(",", ":"), default=str)


def configure_gateway_log(level: str = "info", stream: IO[str] | None = None) -> None:
    """Route the ``wardgate`` logger to ``stream`` (stderr) as ECS JSON."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(EcsFormatter())
    logger = logging.getLogger("wardgate")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    # aiohttp's own loggers would print request lines and tracebacks in their own format.
    for name in ("aiohttp.server", "aiohttp.access", "aiohttp.web", "asyncio"):
        other = logging.getLogger(name)
        other.handlers[:] = [handler]
        other.setLevel("CRITICAL" if name == "aiohttp.access" else "ERROR")
        other.propagate = False
