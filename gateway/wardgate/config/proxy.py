"""``proxy``: HTTP connection manager behaviour (request ids, forwarding headers, timeouts)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from wardgate.config.base import Duration, SpecModel


class TimeoutsSpec(SpecModel):
    """Upstream timeouts. Expiry is answered like Envoy: 503 ``UF`` when the connection
    cannot be made in time, 504 ``UT`` when the response does not start in time."""

    connect: Duration = 5.0
    """Time to open a connection to the upstream (Envoy's cluster ``connect_timeout``)."""

    request: Duration = 15.0
    """Time from forwarding the request until the upstream's response headers (Envoy's
    route ``timeout``)."""

    idle: Duration = 300.0
    """Longest silence while a request or response body streams (Envoy's
    ``stream_idle_timeout``)."""


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
    """Upstream timeouts."""
