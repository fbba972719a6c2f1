"""The ext_authz (and ext_proc) servers: gRPC and HTTP listeners over one
:class:`PolicyHolder`, reloaded by the same :class:`PolicyReloader` as the native proxy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web

from wardgate.admin.app import admin_app
from wardgate.admin.guard import warn_if_exposed
from wardgate.admin.state import GatewayState, ServerState
from wardgate.envoy import ext_proc, grpc_authz
from wardgate.envoy.decision import decide, internal_error
from wardgate.envoy.http_authz import HttpAuthzHandler
from wardgate.envoy.limitations import envoy_limitations
from wardgate.runtime import PolicyHolder, PolicyReloader

log = logging.getLogger("wardgate.envoy")

HEALTH_SERVICE = "grpc.health.v1.Health"
# grpc.health.v1.HealthCheckResponse{status: SERVING (1) | NOT_SERVING (2)}: one varint
# field, written out rather than pulling in a package for two constant messages. Kubelet's
# gRPC probe and Envoy's gRPC health checks ask this.
HEALTH_SERVING = b"\x08\x01"
HEALTH_NOT_SERVING = b"\x08\x02"

MAX_LINE_BYTES = 65536
MAX_FIELD_BYTES = 65536
MAX_HEADERS = 1024


@dataclass(frozen=True)
class ExtAuthzOptions:
    """Where to listen. ``None`` for a protocol: not served. Port 0: any free port."""

    grpc_listen: tuple[str, int] | None = None
    http_listen: tuple[str, int] | None = None
    admin_listen: tuple[str, int] | None = None
    """The admin port (Envoy admin endpoints, Prometheus); ``None``: not served."""
    drain_timeout: float = 5.0


class ExtAuthzServer:
    """Serves Envoy's ext_authz protocols (and ext_proc on the gRPC port) for the policy in
    ``holder``. When ``reloader`` is given and not already watched elsewhere, :meth:`start`
    watches it too."""

    def __init__(
        self,
        holder: PolicyHolder,
        options: ExtAuthzOptions,
        reloader: PolicyReloader | None = None,
        watch: bool = True,
    ) -> None:
        self.holder = holder
        self.options = options
        self.reloader = reloader
        self.watch = watch
        self.grpc_address: str | None = None
        self.http_address: str | None = None
        self.stopping = asyncio.Event()
        self._grpc: Any = None
        self._http: web.ServerRunner | None = None
        self._admin: web.AppRunner | None = None
        self.state = GatewayState(
            holder=holder,
            reloader=reloader,
            upstream="",
            listen="",
            admin="",
            workers=1,
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if self.options.grpc_listen is not None:
            await self._start_grpc(*self.options.grpc_listen)
        if self.options.http_listen is not None:
            await self._start_http(*self.options.http_listen)
        self.state.listen = ", ".join(
            f"{name}={address}"
            for name, address in (("grpc", self.grpc_address), ("http", self.http_address))
            if address
        )
        if self.options.admin_listen is not None:
            await self._start_admin(*self.options.admin_listen)
        if self.reloader is not None and self.watch:
            self._tasks.append(asyncio.create_task(self.reloader.watch()))
        policy = self.holder.current
        log.info(
            "ext_authz listening",
            extra={
                "wardgate": {
                    "grpc": self.grpc_address,
                    "http": self.http_address,
                    "admin": self.state.admin or None,
                    "policy": {"digest": policy.digest, "generation": policy.generation},
                    # What this policy cannot get over Envoy's protocols (wardgate validate).
                    "limitations": [*policy.limitations(), *envoy_limitations(policy)],
                }
            },
        )

    async def _start_grpc(self, host: str, port: int) -> None:
        holder = self.holder

        async def check(request: Any, _context: Any) -> Any:
            policy = holder.current
            try:
                check_input = grpc_authz.check_input(request)
            except Exception as exc:  # a message we cannot read is refused, never allowed
                log.error(
                    "unreadable CheckRequest; refused",
                    extra={"wardgate": {"error": type(exc).__name__}},
                )
                refusal = internal_error(policy, str(uuid.uuid4()), "invalid_check_request")
                return grpc_authz.check_response(refusal)
            return grpc_authz.check_response(await decide(policy, check_input))

        async def health(_request: bytes, _context: Any) -> bytes:
            serving = not self.stopping.is_set() and self.state.state is ServerState.LIVE
            return HEALTH_SERVING if serving else HEALTH_NOT_SERVING

        async def process(messages: Any, _context: Any) -> Any:
            # grpcio wants the handler itself to be an async generator function.
            async for response in ext_proc.process(holder, messages):
                yield response

        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    HEALTH_SERVICE,
                    {
                        "Check": grpc.unary_unary_rpc_method_handler(
                            health,
                            request_deserializer=bytes,
                            response_serializer=bytes,
                        )
                    },
                ),
                grpc.method_handlers_generic_handler(
                    ext_proc.SERVICE,
                    {
                        ext_proc.METHOD: grpc.stream_stream_rpc_method_handler(
                            process,
                            request_deserializer=ext_proc.parse_processing_request,
                            response_serializer=ext_proc.serialize_processing_response,
                        )
                    },
                ),
                grpc.method_handlers_generic_handler(
                    grpc_authz.SERVICE,
                    {
                        grpc_authz.METHOD: grpc.unary_unary_rpc_method_handler(
                            check,
                            request_deserializer=grpc_authz.parse_check_request,
                            response_serializer=grpc_authz.serialize_check_response,
                        )
                    },
                ),
            )
        )
        bound = server.add_insecure_port(f"{_bracket(host)}:{port}")
        if bound == 0:
            raise OSError(f"cannot listen on {host}:{port} for gRPC")
        await server.start()
        self._grpc = server
        self.grpc_address = f"{host}:{bound}"

    async def _start_http(self, host: str, port: int) -> None:
        server = web.Server(
            HttpAuthzHandler(self.holder),
            max_line_size=MAX_LINE_BYTES,
            max_field_size=MAX_FIELD_BYTES,
            max_headers=MAX_HEADERS,
            auto_decompress=False,
        )
        runner = web.ServerRunner(server, shutdown_timeout=self.options.drain_timeout)
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        self._http = runner
        address = runner.addresses[-1]
        self.http_address = f"{address[0]}:{address[1]}"

    async def _start_admin(self, host: str, port: int) -> None:
        async def drain() -> None:
            self.state.draining = True  # /ready and gRPC health say NOT_SERVING

        async def quit_() -> None:
            self.stopping.set()

        async def reload() -> None:
            if self.reloader is not None:
                await self.reloader.reload()

        runner = web.AppRunner(
            admin_app(self.state, drain, quit_, reload), access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        warn_if_exposed(host)
        await web.TCPSite(runner, host, port).start()
        self._admin = runner
        address = runner.addresses[-1]
        self.state.admin = f"{address[0]}:{address[1]}"

    def install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        if self.reloader is not None:
            reloader = self.reloader
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(reloader.reload()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._grpc is not None:
            await self._grpc.stop(self.options.drain_timeout)
            self._grpc = None
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
        if self._admin is not None:
            await self._admin.cleanup()
            self._admin = None

    async def run_until_stopped(self) -> None:
        await self.stopping.wait()
        log.info("ext_authz shutting down")
        await self.stop()
        log.info("stopped")


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def serve(policy_path: str, options: ExtAuthzOptions) -> None:
    """Load ``policy_path`` (refusing to start when it is invalid: :class:`PolicyError`),
    serve until SIGTERM/SIGINT, reload on change and on SIGHUP."""
    from wardgate.runtime import load_compiled

    holder = PolicyHolder(load_compiled(policy_path))
    server = ExtAuthzServer(holder, options, PolicyReloader(policy_path, holder))
    server.install_signals()
    await server.start()
    await server.run_until_stopped()
