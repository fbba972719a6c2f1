"""The status listener: a read-only view of the gateway for the network (as Envoy/Istio
expose ``15021``/``15090`` beside an admin port kept on localhost).

Contract: only ``GET``/``HEAD`` on exactly these paths; nothing here changes state, reloads,
drains or quits (those stay on the admin port, bound to 127.0.0.1). Any other method gets
405, any other path 404.

* ``/ready`` (also ``/healthz/ready``): ``200 LIVE`` when serving, ``503`` while draining or
  after ``POST /healthcheck/fail`` on the admin port. The sidecar's readiness and startup
  probes use it.
* ``/stats/prometheus``: the same metrics as the admin port.
* ``/policy``: ``{"digest", "generation", "state", "last_reload_error"}``: what the
  operator compares with ``status.policyDigest`` for the ``Propagated`` condition. No policy
  content (the admin ``/config_dump`` has that, redacted, on localhost).
"""

from __future__ import annotations

import json

from aiohttp import web

from wardgate.admin.state import GatewayState
from wardgate.observability import metrics

STATUS_PATHS = ("/ready", "/healthz/ready", "/stats/prometheus", "/policy")


def prometheus_response() -> web.Response:
    """The Prometheus text exposition of every metric (admin and status ports)."""
    return web.Response(
        body=metrics.render_prometheus(),
        content_type="text/plain",
        charset="utf-8",
        headers={"x-prometheus-format": "0.0.4"},
    )


def status_app(state: GatewayState) -> web.Application:
    """The read-only status application for ``state``."""
    app = web.Application()

    async def ready(_: web.Request) -> web.Response:
        current = state.state
        return web.Response(
            text=f"{current.value}\n",
            status=200 if current.value == "LIVE" else 503,
            content_type="text/plain",
        )

    async def prometheus(_: web.Request) -> web.Response:
        return prometheus_response()

    async def policy(_: web.Request) -> web.Response:
        current = state.holder.current
        doc = {
            "digest": current.digest,
            "generation": current.generation,
            "state": state.state.value,
            "last_reload_error": state.reloader.last_error if state.reloader else None,
        }
        return web.Response(text=json.dumps(doc) + "\n", content_type="application/json")

    app.router.add_get("/ready", ready)
    app.router.add_get("/healthz/ready", ready)
    app.router.add_get("/stats/prometheus", prometheus)
    app.router.add_get("/policy", policy)
    return app


async def start_status(state: GatewayState, host: str, port: int) -> web.AppRunner:
    """Serve :func:`status_app` on ``host:port``; the caller cleans the runner up."""
    runner = web.AppRunner(status_app(state), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
