"""Overload protection for the proxy listener: a per-worker cap on client connections, kept
well below the file descriptor limit, so that a flood of (slow) clients is refused with a
503 instead of exhausting the process's descriptors, and the admin port, which shares them
in a single-worker gateway, keeps answering.

Envoy's equivalents are the listener's ``max_connections`` (``downstream_cx_overflow``) and
the overload manager; nginx's is ``worker_connections``."""

from __future__ import annotations

import asyncio
import logging
import resource
import time
import uuid
from collections.abc import Callable
from typing import cast

from wardgate.filters.api import LocalReply
from wardgate.observability import metrics
from wardgate.observability.response_flags import ResponseFlag
from wardgate.proxy.upstream_client import MAX_IDLE_CONNECTIONS

log = logging.getLogger("wardgate.proxy")

FD_RESERVE = 128
"""Descriptors kept out of the client budget: listening sockets, the admin port and its
clients, policy and log files, metrics files, and refused connections still closing."""

MAX_OVERFLOW_LINGERING = 32
"""Refused connections that may wait (:data:`OVERFLOW_LINGER_SECONDS`) for the client to
read the 503; beyond that the 503 is written and the connection closed at once (best
effort: unread request bytes may turn the close into a reset), so refusals never eat the
reserve."""

OVERFLOW_LINGER_SECONDS = 0.5
_WARN_EVERY_SECONDS = 10.0


def close_after_reply(
    transport: asyncio.Transport, seconds: float, close: Callable[[], object]
) -> asyncio.TimerHandle:
    """After a final reply: FIN now (where the transport can half-close; TLS cannot) and
    ``close`` in ``seconds``. The caller discards what the client still sends meanwhile.

    Why not close at once: a socket closed with unread input answers it with a reset, and
    the client's kernel may then drop the reply before the client reads it (Envoy's
    ``delayed_close_timeout``, nginx's lingering close)."""
    if transport.can_write_eof():
        transport.write_eof()
    return asyncio.get_running_loop().call_later(seconds, close)


def raise_nofile_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (what nginx's
    ``worker_rlimit_nofile`` and Envoy's container images do) and return the soft limit now
    in force. A failure to raise keeps the current limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or target <= soft:
        return soft if soft != resource.RLIM_INFINITY else 1 << 20
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target


def connection_budget(nofile: int) -> int:
    """How many client connections a process with ``nofile`` descriptors can hold: each may
    need an upstream connection too, the pool keeps up to ``MAX_IDLE_CONNECTIONS`` idle
    ones, and :data:`FD_RESERVE` stay free for everything else (the admin port first)."""
    return max(1, (nofile - FD_RESERVE - MAX_IDLE_CONNECTIONS) // 2)


def effective_limit(configured: int, budget: int) -> int:
    """The connection cap in force: the policy's, lowered to the descriptor budget (logged
    once per distinct pair, at warning level: the operator asked for more)."""
    limit = min(configured, budget)
    if limit < configured and (configured, budget) not in _warned_budgets:
        _warned_budgets.add((configured, budget))
        log.warning(
            "proxy.maxConnections lowered to fit the file descriptor limit",
            extra={
                "wardgate": {
                    "max_connections": configured,
                    "effective": limit,
                    "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                }
            },
        )
    return limit


_warned_budgets: set[tuple[int, int]] = set()


class OverflowProtocol(asyncio.Protocol):
    """A connection accepted over the cap: answered ``503`` (flag ``OM``, as Envoy's
    overload manager answers), counted, and closed. The client's request is not read or
    parsed; what it sends in the short linger is discarded (closing with unread data would
    reset the connection before the client reads the 503)."""

    lingering = 0
    _last_warning = 0.0
    _since_warning = 0

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        metrics.DOWNSTREAM_CX_OVERFLOW.inc()
        note_overflow()
        conn = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        conn.write(overload_response())
        if OverflowProtocol.lingering >= MAX_OVERFLOW_LINGERING:
            conn.close()
            return
        OverflowProtocol.lingering += 1
        self._transport = conn
        self._timer = asyncio.get_running_loop().call_later(OVERFLOW_LINGER_SECONDS, conn.close)

    def data_received(self, data: bytes) -> None:
        """Discarded: the connection is refused whatever it asks."""

    def eof_received(self) -> bool:
        return False  # the client is done: close now

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            OverflowProtocol.lingering -= 1
            self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def note_overflow() -> None:
    """A warning at most every ten seconds, with the number refused since the last one: a
    flood must not become a flood of log lines."""
    OverflowProtocol._since_warning += 1
    now = time.monotonic()
    if now - OverflowProtocol._last_warning >= _WARN_EVERY_SECONDS:
        log.warning(
            "connection limit reached: refusing new connections with 503",
            extra={"wardgate": {"refused": OverflowProtocol._since_warning}},
        )
        OverflowProtocol._last_warning = now
        OverflowProtocol._since_warning = 0


def overload_response() -> bytes:
    """The whole 503 response for a refused connection, Envoy's overload answer as a
    problem+json local reply with its own request id."""
    request_id = str(uuid.uuid4())
    reply = LocalReply(
        503,
        "gateway",
        "overloaded",
        "the gateway is at its connection limit",
        response_flag=ResponseFlag.OVERLOAD_MANAGER,
    )
    return local_reply_bytes(reply, request_id)


def local_reply_bytes(reply: LocalReply, request_id: str) -> bytes:
    """A complete HTTP/1.1 response for ``reply`` that closes the connection, written
    straight to a transport (no request object exists: the request was refused unread or
    unparsed)."""
    body = reply.render_body(request_id)
    phrase = _PHRASES.get(reply.status, "Error")
    head = (
        f"HTTP/1.1 {reply.status} {phrase}\r\n"
        f"content-type: {reply.content_type}\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-request-id: {request_id}\r\n"
        "server: wardgate\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_PHRASES = {
    400: "Bad Request",
    408: "Request Timeout",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}
