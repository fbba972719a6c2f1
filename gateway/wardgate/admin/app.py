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


def admin_app(state: GatewayState, drain: Action, quit_: Action, reload: Action) -> web.Application:
    """Build the admin application. ``drain`` stops the listeners (in-flight requests
    finish), ``quit_`` shuts the gateway down gracefully, ``reload`` re-reads the policy.
    Requests that change something are refused with 403 when they come from a browser page
    of another origin or through a DNS name (:mod:`wardgate.admin.guard`)."""

    @web.middleware
    async def browser_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        bind_host = state.admin.rpartition(":")[0]
        problem = refusal(request.method, request.headers, bind_host)
        if problem is not None:
            return _text(f"{problem}\n", 403)
        return await handler(request)

    app = web.Application(middlewares=[browser_guard])

    async def ready(_: web.Request) -> web.Response:
        current = state.state
        return _text(f"{current.value}\n", 200 if current.value == "LIVE" else 503)

    async def server_info(_: web.Request) -> web.Response:
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
            }
        )

    async def stats(_: web.Request) -> web.Response:
        return _text(metrics.render_stats())

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(
            body=metrics.render_prometheus(),
            content_type="text/plain",
            charset="utf-8",
            headers={"x-prometheus-format": "0.0.4"},
        )

    async def config_dump(_: web.Request) -> web.Response:
        policy = state.holder.current
        return _json(
            {
                "policy": policy.spec.redacted(),
                "digest": policy.digest,
                "generation": policy.generation,
                "filters": list(policy.filter_names()),
                "limitations": list(policy.limitations()),
            }
        )

    async def health_fail(_: web.Request) -> web.Response:
        state.health_check_failed = True
        return _text("OK\n")

    async def health_ok(_: web.Request) -> web.Response:
        state.health_check_failed = False
        return _text("OK\n")

    async def drain_listeners(_: web.Request) -> web.Response:
        await drain()
        return _text("OK\n")

    async def quitquitquit(_: web.Request) -> web.Response:
        # Answer first, then shut down: the caller gets its OK.
        asyncio.get_running_loop().call_later(0.05, lambda: asyncio.ensure_future(quit_()))
        return _text("OK\n")

    async def do_reload(_: web.Request) -> web.Response:
        await reload()
        return _text("OK\n")

    async def post_required(request: web.Request) -> web.Response:
        return _text(f"Method {request.method} not allowed, POST required.\n", 400)

    async def index(_: web.Request) -> web.Response:
        return _text(
            "\n".join(
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
            + "\n"
        )

    app.router.add_get("/", index)
    app.router.add_get("/ready", ready)
    app.router.add_get("/server_info", server_info)
    app.router.add_get("/stats", stats)
    app.router.add_get("/stats/prometheus", prometheus)
    app.router.add_get("/config_dump", config_dump)
    handlers = {
        "/healthcheck/fail": health_fail,
        "/healthcheck/ok": health_ok,
        "/drain_listeners": drain_listeners,
        "/quitquitquit": quitquitquit,
        "/reload": do_reload,
    }
    for path in _POST_ONLY:
        app.router.add_post(path, handlers[path])
        app.router.add_get(path, post_required)
    return app
