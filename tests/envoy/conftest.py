"""Fixtures: Wardgate's ext_authz server in the test's event loop, the demo upstream, and
real Envoy in front, wired by port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.envoy.harness import (
    ADMIN,
    GRPC_AUTHZ,
    HTTP_AUTHZ,
    LISTEN,
    UPSTREAM,
    Envoy,
    free_port,
    render,
    start_envoy,
)
from wardgate.config import load_policy_text
from wardgate.envoy.server import ExtAuthzOptions, ExtAuthzServer
from wardgate.runtime import PolicyHolder, PolicyReloader, compile_policy


@dataclass
class Stack:
    """Envoy -> (Wardgate ext_authz) -> upstream."""

    envoy: Envoy
    authz: ExtAuthzServer | None

    @property
    def url(self) -> str:
        return self.envoy.url


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


@pytest.fixture
async def authz_server(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[ExtAuthzServer] = []

    async def start(policy: str = "", grpc: bool = True, http: bool = True) -> ExtAuthzServer:
        path = tmp_path / f"policy-{len(started)}.yaml"
        path.write_text(policy)
        holder = PolicyHolder(compile_policy(load_policy_text(policy)))
        server = ExtAuthzServer(
            holder,
            ExtAuthzOptions(
                grpc_listen=("127.0.0.1", 0) if grpc else None,
                http_listen=("127.0.0.1", 0) if http else None,
                drain_timeout=0.5,
            ),
            PolicyReloader(path, holder, interval=0.1),
        )
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def envoy_stack(
    tmp_path: Path, upstream: str, authz_server: Callable[..., Any]
) -> AsyncIterator[Callable[..., Any]]:
    """``await envoy_stack("ext-authz-grpc.yaml", policy_yaml, **envoy_overrides)``. With
    ``wardgate=False`` the ext_authz port points at a closed port (Wardgate down)."""
    envoys: list[Envoy] = []

    async def start(
        example: str,
        policy: str = "",
        wardgate: bool = True,
        authz_ports: tuple[int, int] | None = None,
        **overrides: Any,
    ) -> Stack:
        """``authz_ports=(grpc, http)``: use a Wardgate started elsewhere."""
        authz = await authz_server(policy) if wardgate and authz_ports is None else None
        if authz is not None:
            assert authz.grpc_address and authz.http_address
            authz_ports = (_port(authz.grpc_address), _port(authz.http_address))
        ports = {
            LISTEN: free_port(),
            ADMIN: free_port(),
            UPSTREAM: _port(upstream),
            GRPC_AUTHZ: authz_ports[0] if authz_ports else free_port(),
            HTTP_AUTHZ: authz_ports[1] if authz_ports else free_port(),
        }
        config = render(example, tmp_path, ports, **overrides)
        envoy = await start_envoy(config, ports[LISTEN], ports[ADMIN])
        envoys.append(envoy)
        return Stack(envoy, authz)

    yield start
    for envoy in envoys:
        envoy.stop()
