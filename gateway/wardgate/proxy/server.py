"""Running the gateway: one process serving proxy and admin, or a supervisor with N worker
processes sharing the listening port (``SO_REUSEPORT``) and one admin port."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess

from aiohttp import web

from wardgate.admin.app import admin_app
from wardgate.admin.guard import warn_if_exposed
from wardgate.admin.state import GatewayState
from wardgate.admin.status import start_status
from wardgate.config import PolicyError
from wardgate.errors import UsageError
from wardgate.observability import metrics
from wardgate.observability.logs import AccessLog, AccessLogFormat, configure_gateway_log
from wardgate.proxy.downstream import ProxyServer
from wardgate.proxy.h2.detect import DetectingServer
from wardgate.proxy.h2.exchange import H2Gateway
from wardgate.proxy.h2.http1 import forward_http1_over_h2
from wardgate.proxy.h2.settings import H2Settings
from wardgate.proxy.handler import ProxyHandler
from wardgate.proxy.overload import connection_budget, raise_nofile_limit
from wardgate.proxy.tls import TlsConfigError, TlsOptions, make_site, server_tls
from wardgate.proxy.upstream import Upstream
from wardgate.runtime import CompiledPolicy, PolicyHolder, PolicyReloader, load_compiled

log = logging.getLogger("wardgate.server")

# Parser ceilings, above every limit a policy can set: the limits filter answers 414/431
# with the policy's own numbers; these only stop what no policy could allow (answered
# 414/431 too, by wardgate.proxy.downstream, which tells them apart by their different
# values).
MAX_LINE_BYTES = 65536
MAX_FIELD_BYTES = 64512
MAX_HEADERS = 1024


@dataclass(frozen=True)
class RunOptions:
    """Everything ``wardgate run`` was asked to do."""

    upstream: str
    policy_path: str | None
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int | None = 9901
    status_host: str = "0.0.0.0"  # noqa: S104 - read-only endpoints, see wardgate.admin.status
    status_port: int | None = None
    workers: int = 1
    access_log: AccessLogFormat = "ecs"
    drain_timeout: float = 20.0
    reload_interval: float = 1.0
    log_level: str = "info"
    tls: TlsOptions = field(default_factory=TlsOptions)
    """Downstream TLS / mutual TLS and upstream TLS (:mod:`wardgate.proxy.tls`)."""
    http2: H2Settings = field(default_factory=H2Settings)
    """HTTP/2 settings, attack limits and the upstream protocol."""


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` or ``:PORT`` (all interfaces is explicit: 0.0.0.0)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"{what} must be HOST:PORT, not {text!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def install_event_loop_policy() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _bound_address(runner: web.BaseRunner) -> str:
    addresses = runner.addresses
    host, port = addresses[-1][0], addresses[-1][1]
    return f"{host}:{port}"


class ListenerServer(DetectingServer, ProxyServer):
    """The proxy listener: protocol detection (:class:`DetectingServer`) in front of the
    guarded HTTP/1.1 server (:class:`ProxyServer`: connection cap, header timeout). A
    connection must show its protocol within the request-header timeout too."""

    def first_bytes_timeout(self) -> float:
        return self.holder.current.proxy.timeouts.request_headers


class GatewayProcess:
    """One serving process: proxy listener, optional admin listener, policy watcher."""

    def __init__(
        self,
        options: RunOptions,
        policy: CompiledPolicy,
        serve_admin: bool,
        access_log: AccessLog | None = None,
    ) -> None:
        self.options = options
        self.access_log = access_log or AccessLog(options.access_log)
        self.holder = PolicyHolder(policy)
        self.reloader = (
            PolicyReloader(options.policy_path, self.holder, options.reload_interval)
            if options.policy_path
            else None
        )
        metrics.POLICY_GENERATION.set(policy.generation)
        self.upstream = Upstream(options.upstream, options.tls)
        self.tls = server_tls(options.tls, options.reload_interval)
        self.serve_admin = serve_admin
        self.stopping = asyncio.Event()
        self.state = GatewayState(
            holder=self.holder,
            reloader=self.reloader,
            upstream=options.upstream,
            listen=f"{options.listen_host}:{options.listen_port}",
            admin=f"{options.admin_host}:{options.admin_port}",
            workers=options.workers,
        )
        if self.tls is not None:
            self.state.tls_info = self.tls.describe
        self._site: web.BaseSite | None = None
        self._runner: web.ServerRunner | None = None
        self._admin_runner: web.AppRunner | None = None
        self._status_runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, reuse_port: bool = False) -> None:
        h2_gateway = H2Gateway(self.holder, self.upstream, self.access_log, self.options.http2)
        over_h2 = (
            functools.partial(forward_http1_over_h2, h2_gateway)
            if self.options.http2.upstream_protocol == "h2c"
            else None
        )
        handler = ProxyHandler(self.holder, self.upstream, self.access_log, over_h2)
        # HTTP/1.1 goes to the guarded aiohttp server as before; HTTP/2 (preface or ALPN
        # h2) to the h2 stack.
        server = ListenerServer(
            handler,
            holder=self.holder,
            fd_budget=connection_budget(raise_nofile_limit()),
            stream_handler=h2_gateway,
            h2_settings=self.options.http2,
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_FIELD_BYTES,
            max_headers=MAX_HEADERS,
            auto_decompress=False,
        )
        self._runner = web.ServerRunner(server, shutdown_timeout=self.options.drain_timeout)
        await self._runner.setup()
        self._site = make_site(
            self._runner,
            self.options.listen_host,
            self.options.listen_port,
            self.tls,
            reuse_port=reuse_port or None,
            backlog=1024,
        )
        await self._site.start()
        if self.tls is not None:
            self._tasks.append(asyncio.create_task(self.tls.watch()))
        self.state.listen = _bound_address(self._runner)
        if self.serve_admin and self.options.admin_port is not None:
            await self.start_admin(self.state, self.drain, self.quit, self.reload)
        if self.reloader is not None:
            self._tasks.append(asyncio.create_task(self.reloader.watch()))
        log.info(
            "listening",
            extra={
                "wardgate": {
                    "listen": self.state.listen,
                    "admin": self.state.admin if self.serve_admin else None,
                    "status": self.state.status if self.serve_admin else None,
                    "upstream": self.options.upstream,
                    "policy": {
                        "digest": self.holder.current.digest,
                        "generation": self.holder.current.generation,
                        "path": self.options.policy_path or "<built-in default>",
                    },
                    "pid": os.getpid(),
                }
            },
        )

    async def start_admin(
        self,
        state: GatewayState,
        drain: Callable[[], Awaitable[None]],
        quit_: Callable[[], Awaitable[None]],
        reload: Callable[[], Awaitable[None]],
    ) -> None:
        self._admin_runner = web.AppRunner(
            admin_app(state, drain, quit_, reload), access_log=None, shutdown_timeout=1.0
        )
        await self._admin_runner.setup()
        warn_if_exposed(self.options.admin_host)
        site = web.TCPSite(self._admin_runner, self.options.admin_host, self.options.admin_port)
        await site.start()
        state.admin = _bound_address(self._admin_runner)
        if self.options.status_port is not None:
            self._status_runner = await start_status(
                state, self.options.status_host, self.options.status_port
            )
            state.status = _bound_address(self._status_runner)

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        loop.add_signal_handler(signal.SIGUSR1, lambda: asyncio.ensure_future(self.drain()))

    async def reload(self) -> None:
        if self.reloader is not None:
            await self.reloader.reload()

    async def drain(self) -> None:
        """Stop accepting connections; in-flight requests finish."""
        self.state.draining = True
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def quit(self) -> None:
        self.stopping.set()

    async def run_until_stopped(self) -> None:
        await self.stopping.wait()
        log.info(
            "shutting down: draining in-flight requests",
            extra={"wardgate": {"deadline_s": self.options.drain_timeout}},
        )
        self.state.draining = True
        for task in self._tasks:
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()  # stops listening, waits for handlers (deadline)
        if self._admin_runner is not None:
            await self._admin_runner.cleanup()
        if self._status_runner is not None:
            await self._status_runner.cleanup()
        await self.upstream.close()
        log.info("stopped")


def _load_or_exit(options: RunOptions) -> CompiledPolicy:
    try:
        return load_compiled(options.policy_path)
    except PolicyError as exc:
        log.error(
            "invalid policy: refusing to start",
            extra={"wardgate": {"policy": {"path": exc.source, "problems": exc.problems}}},
        )
        print(exc.report(), file=sys.stderr)
        raise SystemExit(1) from None


async def _serve(options: RunOptions, serve_admin: bool, reuse_port: bool) -> None:
    policy = _load_or_exit(options)
    try:
        process = GatewayProcess(options, policy, serve_admin)
    except TlsConfigError as exc:
        log.error("invalid TLS files: refusing to start", extra={"wardgate": {"error": str(exc)}})
        print(f"wardgate: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    process.install_signals()
    await process.start(reuse_port=reuse_port)
    await process.run_until_stopped()


def run(options: RunOptions) -> int:
    """Run the gateway until SIGTERM/SIGINT or ``POST /quitquitquit``. Exit status 0 after a
    graceful stop, 1 when the policy is invalid at start."""
    configure_gateway_log(options.log_level)
    if options.workers > 1:
        return Supervisor(options).run()
    install_event_loop_policy()
    try:
        asyncio.run(_serve(options, serve_admin=True, reuse_port=False))
    except OSError as exc:
        log.error("cannot listen", extra={"wardgate": {"error": str(exc)}})
        print(f"wardgate: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


def _worker_main(options: RunOptions) -> None:
    configure_gateway_log(options.log_level)
    install_event_loop_policy()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; SIGTERM drains
    asyncio.run(_serve(options, serve_admin=False, reuse_port=True))


class Supervisor:
    """Starts N workers on one port (``SO_REUSEPORT``), restarts any that dies, serves the
    admin port, and forwards SIGTERM (graceful stop), SIGHUP (reload) and drains."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.context = multiprocessing.get_context("spawn")
        self.workers: dict[int, BaseProcess] = {}
        self.stopping = False

    def run(self) -> int:
        policy = _load_or_exit(self.options)
        try:
            server_tls(self.options.tls)  # refuse to start rather than respawn failing workers
        except TlsConfigError as exc:
            print(f"wardgate: {exc}", file=sys.stderr)
            return 1
        metrics_dir = tempfile.mkdtemp(prefix="wardgate-metrics-")
        # Set before the workers start: prometheus_client picks its multi-process value
        # store at import time, in each (spawned) worker.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        reserved = socket.socket(
            socket.AF_INET6 if ":" in self.options.listen_host else socket.AF_INET
        )
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            reserved.bind((self.options.listen_host, self.options.listen_port))
        except OSError as exc:
            print(f"wardgate: cannot listen: {exc}", file=sys.stderr)
            return 1
        # The bound, non-listening socket keeps the port ours (and resolves port 0) while
        # workers come and go; it never receives connections.
        port = reserved.getsockname()[1]
        self.worker_options = dataclasses.replace(self.options, listen_port=port, admin_port=None)
        install_event_loop_policy()
        try:
            asyncio.run(self._main(policy, port))
        finally:
            reserved.close()
            for path in os.listdir(metrics_dir):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(metrics_dir, path))
            with contextlib.suppress(OSError):
                os.rmdir(metrics_dir)
        return 0

    def _spawn(self) -> None:
        process = self.context.Process(
            target=_worker_main, args=(self.worker_options,), name="wardgate-worker"
        )
        process.start()
        assert process.pid is not None
        self.workers[process.pid] = process

    def _signal_workers(self, sig: signal.Signals) -> None:
        for process in self.workers.values():
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, sig)

    async def _main(self, policy: CompiledPolicy, port: int) -> None:
        front = GatewayProcess(dataclasses.replace(self.options, listen_port=port), policy, True)
        front.state.listen = f"{self.options.listen_host}:{port}"

        async def drain() -> None:
            front.state.draining = True
            self._signal_workers(signal.SIGUSR1)

        async def quit_() -> None:
            front.stopping.set()

        async def reload() -> None:
            self._signal_workers(signal.SIGHUP)
            await front.reload()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, front.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reload()))
        for _ in range(self.options.workers):
            self._spawn()
        await front.start_admin(front.state, drain, quit_, reload)
        reload_task = (
            asyncio.create_task(front.reloader.watch()) if front.reloader is not None else None
        )
        # The supervisor reads the same TLS files as its workers: /server_info tells.
        tls_task = asyncio.create_task(front.tls.watch()) if front.tls is not None else None
        log.info(
            "supervising workers",
            extra={
                "wardgate": {
                    "listen": front.state.listen,
                    "admin": front.state.admin,
                    "workers": list(self.workers),
                    "policy": {"digest": policy.digest},
                }
            },
        )
        while not front.stopping.is_set():
            front.state.worker_pids = sorted(self.workers)
            for pid, process in list(self.workers.items()):
                if not process.is_alive():
                    del self.workers[pid]
                    from prometheus_client import multiprocess

                    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
                    log.error(
                        "worker exited; restarting",
                        extra={"wardgate": {"pid": pid, "exitcode": process.exitcode}},
                    )
                    self._spawn()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(front.stopping.wait(), 0.25)
        front.state.draining = True
        if reload_task is not None:
            reload_task.cancel()
        if tls_task is not None:
            tls_task.cancel()
        self._signal_workers(signal.SIGTERM)
        deadline = time.monotonic() + self.options.drain_timeout + 5
        while any(p.is_alive() for p in self.workers.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for process in self.workers.values():
            if process.is_alive():
                process.kill()
        for runner in (front._admin_runner, front._status_runner):
            if runner is not None:
                await runner.cleanup()
