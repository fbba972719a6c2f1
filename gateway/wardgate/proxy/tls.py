"""TLS for the proxy listener (downstream) and for the upstream connection.

Downstream (``wardgate run --tls-cert --tls-key [--tls-client-ca]``), as an Envoy
``DownstreamTlsContext`` user would expect:

* TLS 1.2 and 1.3 only, ECDHE with AES-GCM or ChaCha20-Poly1305 for TLS 1.2 (TLS 1.3
  suites are all modern), no compression, no renegotiation; ALPN from
  :data:`DEFAULT_ALPN` (``h2`` preferred, then ``http/1.1``, as Envoy's default; the
  listener hands each connection to the HTTP/2 or HTTP/1.1 stack by the negotiated
  protocol). A plain-HTTP request on the port is a failed handshake.
* With a client CA bundle, a client certificate chaining to it is required (mutual TLS);
  its identity (:class:`~wardgate.filters.identity.PeerIdentity`) is computed once per
  connection, after the handshake, and read per request with :func:`peer_of`.
* A client sending SNI for a name the certificate does not cover is refused with the
  ``unrecognized_name`` alert (it was meant for another service). No SNI is accepted.
* Every handshake that fails (unknown CA, expired or not-yet-valid certificate, wrong key
  usage, no certificate, TLS 1.0/1.1, SNI mismatch, plain HTTP, a stall beyond the
  handshake timeout) is refused, counted in ``wardgate_tls_handshakes_total{result=
  "failure", reason=...}`` and logged with its reason (rate-limited per reason); the
  listener keeps serving everyone else.
* Rotation: :meth:`ServerTls.watch` polls the files' fingerprints (through symlinks, so a
  Kubernetes Secret's ``..data`` swap is seen) and builds a new context off the event loop.
  New handshakes use it; open connections keep theirs (nothing is dropped). A broken new
  pair (unreadable, key not matching, not PEM) keeps the last good context, logged and
  counted in ``wardgate_tls_certificate_reloads_total{result="failure"}``.

How: the listening socket is uvloop's own TLS server (``create_server(ssl=...)``, with
``ssl_handshake_timeout``). Its per-connection TLS object is our :class:`_TlsConnection`
(the context's ``sslobject_class``), which switches to the current context before the
first handshake step and sees every handshake's outcome, so failures are told apart and
counted without a second TLS implementation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509

from wardgate.errors import TlsConfigError as TlsConfigError  # noqa: PLC0414 - re-export
from wardgate.errors import UsageError
from wardgate.filters.identity import PeerIdentity
from wardgate.observability import metrics
from wardgate.runtime.identity import identity_from_der, subject_alt_names
from wardgate.runtime.reload import Fingerprint, fingerprint

log = logging.getLogger("wardgate.tls")

DEFAULT_ALPN: tuple[str, ...] = ("h2", "http/1.1")
"""ALPN protocols the listener offers, in preference order."""

TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
"""Mozilla's "intermediate" TLS 1.2 suites: forward secrecy and AEAD only."""

DEFAULT_HANDSHAKE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class ServerTlsFiles:
    """The listener's certificate chain, private key and optional client CA bundle (PEM)."""

    cert: str
    key: str
    client_ca: str | None = None

    def paths(self) -> tuple[str, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """The TLS part of ``wardgate run``'s options: downstream (``--tls-*``) and upstream
    (``--upstream-ca``, ``--upstream-sni``, ``--upstream-cert``/``--upstream-key``)."""

    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    upstream_ca: str | None = None
    upstream_sni: str | None = None
    upstream_cert: str | None = None
    upstream_key: str | None = None
    alpn: tuple[str, ...] = DEFAULT_ALPN
    """ALPN protocols the listener offers, preferred first (the hook for ``h2``)."""

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise UsageError("--tls-cert and --tls-key go together")
        if self.client_ca is not None and self.cert is None:
            raise UsageError("--tls-client-ca needs --tls-cert and --tls-key")
        if (self.upstream_cert is None) != (self.upstream_key is None):
            raise UsageError("--upstream-cert and --upstream-key go together")
        if self.handshake_timeout <= 0:
            raise UsageError("--tls-handshake-timeout must be positive")

    @property
    def downstream(self) -> ServerTlsFiles | None:
        if self.cert is None or self.key is None:
            return None
        return ServerTlsFiles(self.cert, self.key, self.client_ca)

    @property
    def upstream_configured(self) -> bool:
        return any(
            v is not None
            for v in (self.upstream_ca, self.upstream_sni, self.upstream_cert, self.upstream_key)
        )


class PeerSSLObject(ssl.SSLObject):
    """The per-connection TLS object, carrying the verified peer's identity."""

    wardgate_peer: PeerIdentity | None = None


def peer_of(transport: asyncio.BaseTransport | None) -> PeerIdentity | None:
    """The verified client identity of a connection (``None``: no TLS or no client
    certificate)."""
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    return getattr(ssl_object, "wardgate_peer", None)


@dataclass(frozen=True, slots=True)
class LoadedTls:
    """One generation of the listener's TLS settings."""

    context: ssl.SSLContext
    dns_names: tuple[str, ...]
    local_uri: str
    not_after: float
    mutual: bool


def _leaf(path: str) -> x509.Certificate:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return x509.load_pem_x509_certificates(data)[0]
    except ValueError:
        raise TlsConfigError(f"{path}: not a PEM certificate") from None


def _ssl_problem(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or getattr(exc, "strerror", None) or type(exc).__name__)


def load_server_tls(files: ServerTlsFiles, alpn: tuple[str, ...] = DEFAULT_ALPN) -> LoadedTls:
    """Build the server context from ``files``; :class:`TlsConfigError` when any of them
    cannot be used (the caller keeps what it had)."""
    leaf = _leaf(files.cert)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(files.cert, files.key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(
            f"{files.cert} / {files.key}: cannot load the pair: {_ssl_problem(exc)}"
        ) from None
    ctx.set_alpn_protocols(list(alpn))
    if files.client_ca:
        try:
            ctx.load_verify_locations(cafile=files.client_ca)
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(
                f"{files.client_ca}: cannot load the CA bundle: {_ssl_problem(exc)}"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
        # No session tickets with client certificates: a resumed session is not verified
        # again, so a client whose CA was rotated out (or whose certificate expired) could
        # go on resuming for the ticket's lifetime. (TLS 1.2 session-ID resumption from
        # OpenSSL's server cache stays possible for its 300 s; Python cannot turn it off.)
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    uris, dns = subject_alt_names(leaf)
    dns_names = tuple(name.lower() for name in dns)
    ctx.sni_callback = _sni_checker(dns_names)
    return LoadedTls(
        context=ctx,
        dns_names=dns_names,
        local_uri=uris[0] if uris else "",
        not_after=leaf.not_valid_after_utc.timestamp(),
        mutual=files.client_ca is not None,
    )


def sni_allowed(server_name: str, dns_names: tuple[str, ...]) -> bool:
    """Whether the certificate's DNS names cover ``server_name`` (a ``*.`` wildcard covers
    exactly one leftmost label). A certificate without DNS names covers every name."""
    if not dns_names:
        return True
    name = server_name.lower().rstrip(".")
    for pattern in dns_names:
        if pattern == name:
            return True
        if pattern.startswith("*.") and "." in name:
            first, rest = name.split(".", 1)
            if first and rest == pattern[2:]:
                return True
    return False


SniCallback = Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]


def _sni_checker(dns_names: tuple[str, ...]) -> SniCallback:
    def check(sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if server_name is None or sni_allowed(server_name, dns_names):
            return None
        if isinstance(sslobj, _TlsConnection):
            sslobj._wg_refusal = "sni_mismatch"
        return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

    return check


_VERIFY_REASONS = {
    9: "not_yet_valid",  # X509_V_ERR_CERT_NOT_YET_VALID
    10: "expired",  # X509_V_ERR_CERT_HAS_EXPIRED
    2: "unknown_ca",  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
    18: "unknown_ca",  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    19: "unknown_ca",  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    20: "unknown_ca",  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21: "unknown_ca",  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
    7: "bad_signature",  # X509_V_ERR_CERT_SIGNATURE_FAILURE
    26: "bad_key_usage",  # X509_V_ERR_INVALID_PURPOSE
    28: "bad_key_usage",  # X509_V_ERR_CERT_REJECTED
}

_SSL_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no_client_certificate",
    "UNSUPPORTED_PROTOCOL": "old_protocol",
    "WRONG_VERSION_NUMBER": "old_protocol",
    "TLSV1_ALERT_PROTOCOL_VERSION": "old_protocol",
    "HTTP_REQUEST": "plain_http",
    "HTTPS_PROXY_REQUEST": "plain_http",
    "CALLBACK_FAILED": "sni_mismatch",  # the only callback that fails is the SNI check
    "NO_SHARED_CIPHER": "no_shared_cipher",
    "UNSUPPORTED_CERTIFICATE_PURPOSE": "bad_key_usage",
}


def classify_handshake_failure(exc: BaseException) -> tuple[str, str]:
    """``(reason, detail)`` for a failed handshake: a stable snake_case reason (the metric
    label) and a short description (OpenSSL's words, never certificate contents)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        return _VERIFY_REASONS.get(code, "invalid_certificate"), str(exc.verify_message)
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or "")
        if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            return "closed", reason or "closed during the handshake"
        return _SSL_REASONS.get(reason, "other"), reason or type(exc).__name__
    if isinstance(exc, TimeoutError) or "taking longer" in str(exc):
        return "timeout", "the handshake did not complete in time"
    if isinstance(exc, ConnectionError | EOFError):
        return "closed", "closed during the handshake"
    return "other", type(exc).__name__


class ServerTls:
    """The listener's TLS: the current :class:`LoadedTls`, its rotation, and the
    accounting of every handshake."""

    def __init__(
        self,
        files: ServerTlsFiles,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        reload_interval: float = 1.0,
        alpn: tuple[str, ...] = DEFAULT_ALPN,
    ) -> None:
        self.files = files
        self.handshake_timeout = handshake_timeout
        self.reload_interval = reload_interval
        self.alpn = alpn
        self._seen = self._fingerprints()
        self.current = load_server_tls(files, alpn)  # TlsConfigError: refuse to start
        self.last_error: str | None = None
        self._log_at: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        # The context the listening socket holds; each connection's TLS object switches to
        # the current context before its first handshake step (see _TlsConnection).
        self.listener_context = self.current.context
        self.listener_context.sslobject_class = type(
            "TlsConnection", (_TlsConnection,), {"wardgate_tls": self}
        )
        metrics.TLS_CERT_NOT_AFTER.set(self.current.not_after)

    def _fingerprints(self) -> tuple[Fingerprint, ...]:
        return tuple(fingerprint(Path(p)) for p in self.files.paths())

    def describe(self) -> dict[str, Any]:
        """The TLS state for ``/server_info``: files, names, expiry, last reload error."""
        loaded = self.current
        return {
            "cert": self.files.cert,
            "client_ca": self.files.client_ca,
            "mutual": loaded.mutual,
            "dns_names": list(loaded.dns_names),
            "uri": loaded.local_uri or None,
            "not_after": int(loaded.not_after),
            "alpn": list(self.alpn),
            "handshake_timeout_s": self.handshake_timeout,
            "last_reload_error": self.last_error,
        }

    # -- rotation ------------------------------------------------------------------------

    async def watch(self) -> None:
        """Poll the files until cancelled; reload when any of them changed."""
        while True:
            await asyncio.sleep(self.reload_interval)
            if self._fingerprints() != self._seen:
                await self.reload()

    async def reload(self) -> bool:
        """Build a context from the files as they are now and use it for new handshakes.
        Returns whether it was installed; on failure the current context stays."""
        self._seen = self._fingerprints()
        try:
            loaded = await asyncio.to_thread(load_server_tls, self.files, self.alpn)
        except TlsConfigError as exc:
            self.last_error = str(exc)
            metrics.TLS_RELOADS.labels(result="failure").inc()
            log.error(
                "TLS certificate reload failed; the last good certificate stays in use",
                extra={"wardgate": {"tls": {"error": str(exc)}}},
            )
            return False
        self.current = loaded
        self.last_error = None
        metrics.TLS_RELOADS.labels(result="success").inc()
        metrics.TLS_CERT_NOT_AFTER.set(loaded.not_after)
        log.info(
            "TLS certificate reloaded",
            extra={
                "wardgate": {
                    "tls": {"not_after": int(loaded.not_after), "dns_names": loaded.dns_names}
                }
            },
        )
        return True

    # -- accounting ----------------------------------------------------------------------

    def refused(self, reason: str, detail: str) -> None:
        """Count and log (rate-limited per reason) one refused handshake."""
        metrics.TLS_HANDSHAKES.labels(result="failure", reason=reason).inc()
        level = logging.DEBUG if reason == "closed" else logging.WARNING
        if not log.isEnabledFor(level):
            return
        now = time.monotonic()
        if now - self._log_at.get(reason, -1e9) < 1.0:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._log_at[reason] = now
        log.log(
            level,
            "TLS handshake refused",
            extra={
                "wardgate": {
                    "tls": {
                        "reason": reason,
                        "detail": detail[:200],
                        "suppressed_since_last": self._suppressed.pop(reason, 0),
                    }
                }
            },
        )


class _TlsConnection(PeerSSLObject):
    """One connection's TLS object (uvloop drives it through ``do_handshake``): switches to
    the current context before the first handshake step (rotation without touching the
    listener), checks SNI, and reports the outcome: the peer identity on success, a
    counted and logged reason on failure, ``timeout``/``closed`` when it is dropped
    mid-handshake."""

    wardgate_tls: ServerTls
    _wg_started = 0.0
    _wg_loaded: LoadedTls | None = None
    _wg_outcome = ""
    _wg_refusal = ""

    def do_handshake(self) -> None:
        tls = self.wardgate_tls
        if self._wg_loaded is None:
            loaded = tls.current
            self._wg_loaded = loaded
            self._wg_started = time.monotonic()
            if self.context is not loaded.context:
                self.context = loaded.context
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except Exception as exc:
            if not self._wg_outcome:
                self._wg_outcome = "failure"
                reason, detail = classify_handshake_failure(exc)
                if self._wg_refusal:
                    reason, detail = self._wg_refusal, "the client asked for another name"
                tls.refused(reason, detail)
            raise
        if not self._wg_outcome:
            self._wg_outcome = "success"
            loaded = self._wg_loaded
            if loaded.mutual:
                der = self.getpeercert(binary_form=True)
                if der is not None:
                    self.wardgate_peer = identity_from_der(der, loaded.local_uri)
            metrics.TLS_HANDSHAKES.labels(result="success", reason="ok").inc()

    def __del__(self) -> None:
        if self._wg_started and not self._wg_outcome:
            with contextlib.suppress(Exception):
                self._dropped()

    def _dropped(self) -> None:
        elapsed = time.monotonic() - self._wg_started
        timeout = self.wardgate_tls.handshake_timeout
        if elapsed >= timeout * 0.95:
            self.wardgate_tls.refused("timeout", f"no complete handshake in {timeout:g}s")
        else:
            self.wardgate_tls.refused("closed", "closed during the handshake")


class TlsSite(web.BaseSite):
    """An aiohttp site serving the runner's protocol over :class:`ServerTls`."""

    __slots__ = ("_host", "_port", "_reuse_port", "_tls")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        tls: ServerTls,
        *,
        reuse_port: bool | None = None,
        backlog: int = 1024,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._tls = tls
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_server(
            server,
            self._host,
            self._port,
            ssl=self._tls.listener_context,
            ssl_handshake_timeout=self._tls.handshake_timeout,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port,
        )


def server_tls(options: TlsOptions, reload_interval: float = 1.0) -> ServerTls | None:
    """The listener's :class:`ServerTls`, or ``None`` for plain HTTP."""
    files = options.downstream
    if files is None:
        return None
    return ServerTls(files, options.handshake_timeout, reload_interval, options.alpn)


def make_site(
    runner: web.BaseRunner,
    host: str,
    port: int,
    tls: ServerTls | None,
    *,
    reuse_port: bool | None = None,
    backlog: int = 1024,
) -> web.BaseSite:
    """The proxy listener: :class:`TlsSite` with TLS, else aiohttp's ``TCPSite``."""
    if tls is None:
        return web.TCPSite(runner, host, port, reuse_port=reuse_port, backlog=backlog)
    return TlsSite(runner, host, port, tls, reuse_port=reuse_port, backlog=backlog)


def upstream_tls(options: TlsOptions, scheme: str) -> ssl.SSLContext | None:
    """The upstream client context for ``scheme`` (``None`` for ``http``). Upstream TLS
    options with an ``http`` upstream are an error: they would silently do nothing."""
    if scheme != "https":
        if options.upstream_configured:
            raise UsageError("--upstream-ca/-sni/-cert/-key need an https:// upstream")
        return None
    return upstream_context(options.upstream_ca, options.upstream_cert, options.upstream_key)


def upstream_context(
    ca_file: str | None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """The client context for an ``https`` upstream: verification always on (the system
    trust store, or only ``ca_file``), TLS 1.2+, hostname checked against the SNI name,
    optionally presenting ``cert``/``key``. :class:`TlsConfigError` when a file is
    unusable."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(
                f"{ca_file}: cannot load the CA bundle: {_ssl_problem(exc)}"
            ) from None
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["http/1.1"])
    if cert is not None:
        try:
            ctx.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise TlsConfigError(
                f"{cert}: cannot load the client certificate: {_ssl_problem(exc)}"
            ) from None
    return ctx
