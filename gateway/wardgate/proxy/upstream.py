"""The pooled, keep-alive client to the one upstream, and the mapping of its failures to
Envoy's local replies and response flags."""

from __future__ import annotations

import functools
import ssl

import aiohttp
from yarl import URL

from wardgate.errors import UsageError
from wardgate.filters.api import LocalReply
from wardgate.observability.response_flags import ResponseFlag
from wardgate.proxy.h2.client import H2UpstreamPool
from wardgate.proxy.tls import TlsOptions, upstream_tls
from wardgate.proxy.upstream_client import UpstreamPool

UPSTREAM_FILTER = "upstream"

# Envoy's own local-reply bodies, so scripts and dashboards written for Envoy still match.
_CONNECT_FAILURE = "upstream connect error or disconnect/reset before headers. reset reason: "


_FAILURES: dict[ResponseFlag, tuple[int, str, str]] = {
    ResponseFlag.UPSTREAM_CONNECTION_FAILURE: (
        503,
        "connect_failure",
        _CONNECT_FAILURE + "connection failure",
    ),
    ResponseFlag.NO_HEALTHY_UPSTREAM: (503, "no_healthy_upstream", "no healthy upstream"),
    ResponseFlag.UPSTREAM_REQUEST_TIMEOUT: (504, "timeout", "upstream request timeout"),
    ResponseFlag.UPSTREAM_CONNECTION_TERMINATION: (
        503,
        "connection_termination",
        _CONNECT_FAILURE + "connection termination",
    ),
    ResponseFlag.UPSTREAM_PROTOCOL_ERROR: (
        502,
        "protocol_error",
        _CONNECT_FAILURE + "protocol error",
    ),
}
"""Status, reason code and Envoy's body text of each upstream failure."""


def upstream_failure(flag: ResponseFlag, reason: str = "") -> LocalReply:
    """The local reply for an upstream failure with Envoy's status, body and flag;
    ``reason`` replaces the flag's own reason code when given (``tls_handshake_failed``)."""
    status, own_reason, text = _FAILURES[flag]
    return LocalReply(
        status=status,
        filter=UPSTREAM_FILTER,
        reason=reason or own_reason,
        detail=text,
        body=text.encode(),
        content_type="text/plain",
        response_flag=flag,
    )


class Upstream:
    """One upstream cluster of one address: its connection pool for requests
    (:mod:`wardgate.proxy.upstream_client`) and an aiohttp session for WebSocket upgrades.

    Neither adds headers of its own (no ``User-Agent``, ``Accept``,
    ``Accept-Encoding`` or ``Content-Type``), never decompresses and never follows
    redirects: the upstream receives what the client sent, the client what the upstream
    sent."""

    def __init__(self, url: str, tls: TlsOptions | None = None) -> None:
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise UsageError(f"upstream must be an http(s)://host[:port] URL, not {url!r}")
        if parsed.path not in ("", "/") or parsed.query_string:
            raise UsageError("upstream URL must not have a path or query")
        self.base = f"{parsed.scheme}://{parsed.raw_authority}"
        self.host_port = f"{parsed.host}:{parsed.port}"
        assert parsed.host is not None and parsed.port is not None
        tls = tls or TlsOptions()
        self.tls_context: ssl.SSLContext | None = upstream_tls(tls, parsed.scheme)
        self.server_hostname = tls.upstream_sni or parsed.host
        self.pool = UpstreamPool(
            parsed.host, parsed.port, self.tls_context, server_hostname=self.server_hostname
        )
        # HTTP/2 to the same address, used when ``--upstream-protocol`` says so: clear
        # text with prior knowledge (h2c), or over TLS with ALPN h2 for https upstreams
        # (a context of its own: the HTTP/1.1 pool's must not offer h2).
        h2_tls = upstream_tls(tls, parsed.scheme)
        if h2_tls is not None:
            h2_tls.set_alpn_protocols(["h2"])
        self.h2_pool = H2UpstreamPool(parsed.host, parsed.port, h2_tls)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0,
                    keepalive_timeout=60.0,
                    ttl_dns_cache=10,
                    enable_cleanup_closed=True,
                    ssl=self.tls_context if self.tls_context is not None else True,
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session

    @staticmethod
    def timeout(connect: float, idle: float) -> aiohttp.ClientTimeout:
        """Per-request timeouts (they come from the policy, which can change on reload)."""
        return _timeouts(connect, idle)

    def url_for(self, raw_target: str) -> URL:
        """The upstream URL for a request target, byte for byte (no re-encoding, no dot
        segment removal: normalisation is for inspection, not for forwarding)."""
        return URL(self.base + raw_target, encoded=True)

    async def close(self) -> None:
        self.pool.close()
        self.h2_pool.close()
        if self._session is not None:
            await self._session.close()
            self._session = None


@functools.lru_cache(maxsize=64)
def _timeouts(connect: float, idle: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=idle)
