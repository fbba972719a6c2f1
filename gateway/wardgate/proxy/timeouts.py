"""How long a client may take to send its request body.

A body may pause for at most ``proxy.timeouts.idle`` between reads (Envoy's
``stream_idle_timeout``) and must, on average, keep a minimum rate: it gets
``proxy.timeouts.requestBody`` seconds plus one second per ``proxy.minRequestBodyRate`` bytes
received (Apache's ``mod_reqtimeout body=20,MinRate=500``). A large upload at any real
speed goes through; a client trickling a byte now and then to hold a connection is cut.

Only time spent waiting for the client counts: while the gateway waits for the upstream to
take the body (flow control), the clock is stopped, so a slow upstream never makes the
client look slow."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

from wardgate.config.proxy import ProxySpec
from wardgate.observability import metrics


class BodyClock:
    """The body-time budget of one request. :meth:`read` wraps each read from the client;
    it raises :class:`TimeoutError` when the budget or the idle timeout runs out, and then
    :attr:`timed_out` is true (the caller answers 408)."""

    __slots__ = ("_allowance", "_idle", "_min_rate", "_received", "_waited", "timed_out")

    def __init__(self, proxy: ProxySpec) -> None:
        self._idle = proxy.timeouts.idle
        self._allowance = proxy.timeouts.request_body
        self._min_rate = float(proxy.min_request_body_rate)
        self._received = 0
        self._waited = 0.0
        self.timed_out = False

    def remaining(self, expect: int = 0) -> float:
        """Seconds the client may still spend sending the body; ``expect`` bytes about to
        be read in one go earn their share in advance."""
        earned = (self._received + expect) / self._min_rate
        return self._allowance + earned - self._waited

    async def read(self, reading: Awaitable[bytes], expect: int = 0) -> bytes:
        """Await ``reading`` (a read from the request body) within the budget."""
        remaining = self.remaining(expect)
        limit = min(self._idle, remaining)
        start = time.monotonic()
        try:
            async with asyncio.timeout(max(limit, 0.0)):
                chunk = await reading
        except TimeoutError:
            self.timed_out = True
            kind = "request_body" if remaining <= self._idle else "stream_idle"
            metrics.DOWNSTREAM_TIMEOUTS.labels(kind=kind).inc()
            raise
        finally:
            self._waited += time.monotonic() - start
        self._received += len(chunk)
        return chunk
