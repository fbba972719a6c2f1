"""Key sources: a local JWKS (parsed at compile time) and remote JWKS caches.

Remote caches live in a process-wide registry keyed by URI, not in the compiled policy:
a hot reload compiles a new policy generation in a worker thread, and the new generation
finds the keys the old one fetched (no refetch storm, no gap). Nothing is started at
compile time; fetches start on the event loop when a request needs keys:

* no keys yet: the request waits for the (single, shared) fetch; if it fails: 503;
* keys older than 80 % of ``cacheDuration``: a background refresh starts, the request goes
  on with the current keys;
* keys older than ``cacheDuration``: the request waits for a refresh; if the provider is
  unreachable the old keys keep working until ``cacheDuration + maxStaleness``, then 503;
* a ``kid`` not in the set: one refetch, at most once per ``minRefreshInterval`` and shared
  by concurrent requests; then the token is refused.

Every failure is counted (``wardgate_jwt_jwks_fetches_total``) and logged (URI without
query string).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from wardgate.filters.jwt_authn import stats
from wardgate.filters.jwt_authn.keys import JwksError, KeySet, parse_jwks

log = logging.getLogger("wardgate.jwt_authn")

MAX_JWKS_BYTES = 1024 * 1024
BACKGROUND_REFRESH_AT = 0.8


class JwksUnavailable(Exception):
    """No usable keys: never fetched, or stale beyond ``maxStaleness``."""


@dataclass(frozen=True, slots=True)
class FetchSettings:
    """How a remote JWKS is fetched and cached (from the newest policy that uses it)."""

    uri: str
    timeout: float
    cache_duration: float
    max_staleness: float
    min_refresh_interval: float
    failed_refetch: float
    retries: int
    backoff_base: float
    backoff_max: float
    ca_file: str | None = None
    """``trustedCa.filename``: verify the server against this bundle (read per fetch)."""
    ca_data: str | None = None
    """``trustedCa.inlineString``."""

    def ssl_context(self) -> ssl.SSLContext | bool:
        """The TLS verification for a fetch: always on; only the given CA when set.
        Raises ``OSError``/``ssl.SSLError`` when the bundle cannot be used."""
        if self.ca_file is None and self.ca_data is None:
            return True  # aiohttp's default: the system trust store, verified
        ctx = ssl.create_default_context(cafile=self.ca_file, cadata=self.ca_data)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


class LocalKeys:
    """Keys given inline with the policy. ``version`` never changes."""

    version = 0

    def __init__(self, keys: KeySet) -> None:
        self.keys = keys

    async def current(self) -> KeySet:
        return self.keys

    async def refresh_for_unknown_kid(self) -> KeySet | None:
        return None


FILE_RECHECK_INTERVAL = 1.0


class FileKeys(LocalKeys):
    """Keys from a file, typically a mounted Kubernetes Secret. The kubelet rotates a
    Secret by swapping a symlink without touching the policy, so on an unknown ``kid`` the
    file is checked again (at most once per second, in a worker thread) and re-read when
    it changed. A file that became unreadable or invalid keeps the keys already loaded."""

    def __init__(self, keys: KeySet, path: str, source: str) -> None:
        super().__init__(keys)
        self.path = path
        self.source = source
        self.version = 0
        self._seen = _file_identity(path)
        self._checked = float("-inf")
        self._lock = asyncio.Lock()

    async def refresh_for_unknown_kid(self) -> KeySet | None:
        async with self._lock:
            if time.monotonic() - self._checked < FILE_RECHECK_INTERVAL:
                return None
            self._checked = time.monotonic()
            identity = await asyncio.to_thread(_file_identity, self.path)
            if identity == self._seen or identity is None:
                return None
            try:
                data = await asyncio.to_thread(_read_small, self.path)
                keys = parse_jwks(data, allow_symmetric=True, source=self.source)
            except (OSError, JwksError) as exc:
                log.warning(
                    "local JWKS file changed but cannot be used; keeping the loaded keys",
                    extra={"wardgate": {"jwks": self.source, "problem": str(exc)}},
                )
                return None
            self._seen = identity
            self.keys = keys
            self.version += 1
            return keys


def _file_identity(path: str) -> tuple[str, int, int, int] | None:
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return (real, st.st_ino, st.st_mtime_ns, st.st_size)


def _read_small(path: str) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(MAX_JWKS_BYTES + 1)
    if len(data) > MAX_JWKS_BYTES:
        raise JwksError(f"larger than {MAX_JWKS_BYTES} bytes")
    return data


def _safe_uri(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


class RemoteJwks:
    """One remote JWKS and its cache, shared by every provider and policy generation that
    names the same URI."""

    def __init__(self, settings: FetchSettings) -> None:
        self.settings = settings
        self.keys: KeySet | None = None
        self.version = 0
        self.fetched_at = 0.0
        self.last_attempt = float("-inf")
        self.last_failure = float("-inf")
        self._inflight: asyncio.Task[bool] | None = None
        self._background: set[asyncio.Task[bool]] = set()

    # --- what requests call -----------------------------------------------------------

    async def current(self) -> KeySet:
        """Usable keys now, or :class:`JwksUnavailable`."""
        settings = self.settings
        now = time.monotonic()
        keys = self.keys
        if keys is None:
            if now - self.last_failure >= settings.failed_refetch or self._running():
                await self._fetch_shared()
            if self.keys is None:
                raise JwksUnavailable
            return self.keys
        age = now - self.fetched_at
        if age >= settings.cache_duration:
            version = self.version
            if now - self.last_failure >= settings.failed_refetch or self._running():
                await self._fetch_shared()
            if self.version != version and self.keys is not None:
                return self.keys
            if age < settings.cache_duration + settings.max_staleness:
                stats.JWKS_STALE.inc()
                return keys
            raise JwksUnavailable
        if (
            age >= settings.cache_duration * BACKGROUND_REFRESH_AT
            and not self._running()
            and now - self.last_failure >= settings.failed_refetch
        ):
            task = self._start()
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return keys

    async def refresh_for_unknown_kid(self) -> KeySet | None:
        """Refetch once for an unknown ``kid`` (rate-limited, shared); ``None`` when the
        rate limit says no or the fetch failed."""
        now = time.monotonic()
        if not self._running() and now - self.last_attempt < self.settings.min_refresh_interval:
            return None
        if not await self._fetch_shared():
            return None
        return self.keys

    # --- fetching ---------------------------------------------------------------------

    def _running(self) -> bool:
        task = self._inflight
        if task is None or task.done():
            return False
        try:
            return task.get_loop() is asyncio.get_running_loop()
        except RuntimeError:
            return False

    def _start(self) -> asyncio.Task[bool]:
        self.last_attempt = time.monotonic()
        task = asyncio.get_running_loop().create_task(self._fetch())
        self._inflight = task
        return task

    async def _fetch_shared(self) -> bool:
        task = self._inflight if self._running() else None
        if task is None:
            task = self._start()
        # shield: one request giving up (client disconnect) must not cancel the shared fetch
        return await asyncio.shield(task)

    async def _fetch(self) -> bool:
        settings = self.settings
        attempts = settings.retries + 1
        delay = settings.backoff_base
        for attempt in range(attempts):
            result = await self._fetch_once(settings)
            if result is not None:
                self.keys = result
                self.version += 1
                self.fetched_at = time.monotonic()
                stats.JWKS_FETCHES.labels(result="success").inc()
                return True
            if attempt + 1 < attempts:
                await asyncio.sleep(delay)
                delay = min(delay * 2, settings.backoff_max)
        self.last_failure = time.monotonic()
        return False

    async def _fetch_once(self, settings: FetchSettings) -> KeySet | None:
        uri = _safe_uri(settings.uri)
        result, problem = "invalid", ""
        try:
            timeout = aiohttp.ClientTimeout(total=settings.timeout)
            verify = settings.ssl_context()
            # trust_env: HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as every HTTP client honours.
            async with (
                aiohttp.ClientSession(timeout=timeout, trust_env=True) as session,
                session.get(
                    settings.uri,
                    allow_redirects=False,
                    headers={"accept": "application/json"},
                    ssl=verify,
                ) as response,
            ):
                if response.status != 200:
                    result, problem = "http_status", f"status {response.status}"
                else:
                    body = await response.content.read(MAX_JWKS_BYTES + 1)
                    if len(body) > MAX_JWKS_BYTES:
                        problem = f"larger than {MAX_JWKS_BYTES} bytes"
                    else:
                        return parse_jwks(body, allow_symmetric=False, source=uri)
        except TimeoutError:
            result, problem = "timeout", f"no answer within {settings.timeout}s"
        except aiohttp.ClientConnectorCertificateError as exc:
            result, problem = "tls_error", str(exc.certificate_error)[:200]
        except aiohttp.ClientSSLError as exc:
            result, problem = "tls_error", type(exc).__name__
        except ssl.SSLError as exc:
            result, problem = "tls_error", f"trustedCa: {exc.reason or type(exc).__name__}"
        except aiohttp.ClientError as exc:
            result, problem = "connect_error", type(exc).__name__
        except JwksError as exc:
            problem = str(exc)
        except (OSError, ValueError) as exc:
            result, problem = "connect_error", type(exc).__name__
        stats.JWKS_FETCHES.labels(result=result).inc()
        log.warning(
            "JWKS fetch failed",
            extra={"wardgate": {"jwks": uri, "result": result, "problem": problem}},
        )
        return None


_REGISTRY: dict[str, RemoteJwks] = {}
_LOCK = threading.Lock()


def remote_jwks(settings: FetchSettings) -> RemoteJwks:
    """The shared cache for ``settings.uri`` (created on first use; safe to call from the
    compile worker thread). The newest settings replace older ones."""
    with _LOCK:
        cache = _REGISTRY.get(settings.uri)
        if cache is None:
            cache = _REGISTRY[settings.uri] = RemoteJwks(settings)
        else:
            cache.settings = settings
        return cache


def forget_all() -> None:
    """Drop every cached remote JWKS (tests, and the bench's uncached runs)."""
    with _LOCK:
        for cache in _REGISTRY.values():
            for task in list(cache._background):
                with contextlib.suppress(RuntimeError):
                    task.cancel()
        _REGISTRY.clear()
