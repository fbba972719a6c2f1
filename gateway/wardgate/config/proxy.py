"""``proxy``: HTTP connection manager behaviour (request ids, forwarding headers, timeouts)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from wardgate.config.base import Duration, SpecModel


class TimeoutsSpec(SpecModel):
    """Timeouts. Upstream expiry is answered like Envoy: 503 ``UF`` when the connection
    cannot be made in time, 504 ``UT`` when the response does not start in time. A client
    too slow with its request is answered 408 and its connection closed."""

    connect: Duration = 5.0
    """Time to open a connection to the upstream (Envoy's cluster ``connect_timeout``)."""

    request: Duration = 15.0
    """Time from forwarding the request until the upstream's response headers (Envoy's
    route ``timeout``)."""

    idle: Duration = 300.0
    """Longest silence while a request or response body streams (Envoy's
    ``stream_idle_timeout``)."""

    request_headers: Duration = 30.0
    """Time a client has for a request's line and headers, from the connection's start or
    the first byte of a further request on it (nginx's ``client_header_timeout``, Envoy's
    ``request_headers_timeout``). Over it: 408, or a silent close when nothing was sent."""

    request_body: Duration = 30.0
    """Time a client has to send its request body, extended by one second for every
    ``proxy.minRequestBodyRate`` bytes received (Apache's ``mod_reqtimeout``
    ``body=...,MinRate=...``): a slow upload keeps going, a trickle is cut. Over it: 408."""


class ProxySpec(SpecModel):
    """How requests are forwarded, following Envoy's HTTP connection manager."""

    preserve_external_request_id: bool = True
    """Keep an ``x-request-id`` the client sent (it must be 1-128 visible ASCII
    characters); otherwise always generate a new one."""

    xff_num_trusted_hops: Annotated[int, Field(ge=0, le=16)] = 0
    """Number of proxies in front of Wardgate whose ``x-forwarded-for`` entries are trusted
    (Envoy's ``xff_num_trusted_hops``). Decides the client address used in logs and whether
    a client-sent ``x-forwarded-proto`` is kept (only when this is at least 1)."""

    timeouts: TimeoutsSpec = TimeoutsSpec()
    """Upstream and client timeouts."""

    min_request_body_rate: Annotated[int, Field(ge=1, le=1073741824)] = 500
    """Bytes per second a request body must average once ``timeouts.requestBody`` is used
    up (each second of that allowance is extended per this many bytes received)."""

    max_connections: Annotated[int, Field(ge=1, le=1000000)] = 4096
    """Client connections one worker keeps open at once (Envoy's listener
    ``max_connections``). A connection over it is answered 503 (flag ``OM``), closed, and
    counted in ``wardgate_downstream_cx_overflow_total``. The gateway lowers it further when
    the file descriptor limit could not hold that many (logged at start)."""

    max_response_headers_kb: Annotated[int, Field(ge=1, le=1024)] = 60
    """Size of an upstream response's status line and headers, in KiB (Envoy's
    ``max_response_headers_kb``). Over it: 502, flag ``UPE``; never buffered beyond it."""

    max_response_headers_count: Annotated[int, Field(ge=1, le=10000)] = 100
    """Number of upstream response header fields (Envoy's ``max_headers_count``). Over it:
    502, flag ``UPE``."""
