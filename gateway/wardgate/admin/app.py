"""The admin port: the Envoy admin endpoints operators script against."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from wardgate import __version__
from wardgate.admin.guard import refusal
from wardgate.admin.state import GatewayState
from wardgate.admin.status import prometheus_response
from wardgate.observability import metrics

Action = Callable[[], Awaitable[None]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_POST_ONLY = (
    "/healthcheck/fail",
    "/healthcheck/ok",
    "/drain_listeners",
    "/quitquitquit",
    "/reload",
)


def _text(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/plain")


def _json(doc: object, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(doc, indent=2) + "\n", status=status, content_type="application/json"
    )


def _duration(seconds: float) -> str:
    return f"{int(seconds)}s"


_INDEX = "\n".join(
    [
        "admin commands are:",
        "  /config_dump: effective policy, secrets redacted",
        "  /drain_listeners (POST): stop accepting, finish in-flight requests",
        "  /healthcheck/fail (POST): make /ready fail",
        "  /healthcheck/ok (POST): undo /healthcheck/fail",
        "  /quitquitquit (POST): shut down gracefully",
        "  /ready: 200 LIVE when serving, 503 otherwise",
        "  /reload (POST): re-read the policy file now",
        "  /server_info: version, state, uptime, policy digest and generation",
        "  /stats: counters as text",
        "  /stats/prometheus: metrics in Prometheus format",
    ]
)


async def _index(_: web.Request) -> web.Response:
    return _text(_INDEX + "\n")


async def _stats(_: web.Request) -> web.Response:
    return _text(metrics.render_stats())


async def _prometheus(_: web.Request) -> web.Response:
    return prometheus_response()


async def _post_required(request: web.Request) -> web.Response:
    return _text(f"Method {request.method} not allowed, POST required.\n", 400)


class _Endpoints:
    """The endpoints that read the gateway's state or act on it."""

    def __init__(self, state: GatewayState, drain: Action, quit_: Action, reload: Action) -> None:
        self.state = state
        self._drain = drain
        self._quit = quit_
        self._reload = reload

    @web.middleware
    async def browser_guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        bind_host = self.state.admin.rpartition(":")[0]
        problem = refusal(request.method, request.headers, bind_host)
        if problem is not None:
            return _text(f"{problem}\n", 403)
        return await handler(request)

    async def ready(self, _: web.Request) -> web.Response:
        current = self.state.state
        return _text(f"{current.value}\n", 200 if current.value == "LIVE" else 503)

    async def server_info(self, _: web.Request) -> web.Response:
        state = self.state
        policy = state.holder.current
        uptime = time.time() - state.started
        return _json(
            {
                "version": f"wardgate/{__version__}",
                "state": state.state.value,
                "uptime_current_epoch": _duration(uptime),
                "uptime_all_epochs": _duration(uptime),
                "policy": {
                    "digest": policy.digest,
                    "generation": policy.generation,
                    "filters": list(policy.filter_names()),
                    "last_reload_error": state.reloader.last_error if state.reloader else None,
                },
                "command_line_options": {
                    "upstream": state.upstream,
                    "listen": state.listen,
                    "admin": state.admin,
                    "workers": state.workers,
                },
                "workers": state.worker_pids,
                "tls": state.tls_info() if state.tls_info is not None else None,
            }
        )

    async def config_dump(self, _: web.Request) -> web.Response:
        policy = self.state.holder.current
        return _json(
            {
                "policy": policy.spec.redacted(),
                "digest": policy.digest,
                "generation": policy.generation,
                "filters": list(policy.filter_names()),
                "limitations": list(policy.limitations()),
            }
        )

    async def health_fail(self, _: web.Request) -> web.Response:
        self.state.health_check_failed = True
        return _text("OK\n")

    async def health_ok(self, _: web.Request) -> web.Response:
        self.state.health_check_failed = False
        return _text("OK\n")

    async def drain_listeners(self, _: web.Request) -> web.Response:
        await self._drain()
        return _text("OK\n")

    async def quitquitquit(self, _: web.Request) -> web.Response:
        # Answer first, then shut down: the caller gets its OK.
        quit_ = self._quit
        asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(quit_()))
        return _text("OK\n")

    async def reload(self, _: web.Request) -> web.Response:
        await self._reload()
        return _text("OK\n")


def admin_app(state: GatewayState, drain: Action, quit_: Action, reload: Action) -> web.Application:
    """Build the admin application. ``drain`` stops the listeners (in-flight requests
    finish), ``quit_`` shuts the gateway down gracefully, ``reload`` re-reads the policy.
    Requests that change something are refused with 403 when they come from a browser page
    of another origin or through a DNS name (:mod:`wardgate.admin.guard`)."""
    endpoints = _Endpoints(state, drain, quit_, reload)
    app = web.Application(middlewares=[endpoints.browser_guard])
    app.router.add_get("/", _index)
    app.router.add_get("/ready", endpoints.ready)
    app.router.add_get("/server_info", endpoints.server_info)
    app.router.add_get("/stats", _stats)
    app.router.add_get("/stats/prometheus", _prometheus)
    app.router.add_get("/config_dump", endpoints.config_dump)
    handlers: dict[str, Handler] = {
        "/healthcheck/fail": endpoints.health_fail,
        "/healthcheck/ok": endpoints.health_ok,
        "/drain_listeners": endpoints.drain_listeners,
        "/quitquitquit": endpoints.quitquitquit,
        "/reload": endpoints.reload,
    }
    for path in _POST_ONLY:
        app.router.add_post(path, handlers[path])
        app.router.add_get(path, _post_required)
    return app
