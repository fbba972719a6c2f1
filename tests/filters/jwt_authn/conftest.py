"""Fixtures for the jwt_authn tests: a real JWKS server over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from tests.filters.jwt_authn.helpers import Key, jwks, rsa_key
from wardgate.filters.jwt_authn import jwks as jwks_module

K1 = rsa_key("k1")


@dataclass
class JwksServer:
    url: str
    keys: list[Key]
    hits: int = 0
    status: int = 200
    body: bytes | None = None
    gate: asyncio.Event | None = None
    hang: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    seen: list[str] = field(default_factory=list)


@pytest.fixture(autouse=True)
def _fresh_registry():
    """Remote JWKS caches are process-wide (keyed by URI): start each test empty."""
    jwks_module.forget_all()
    yield
    jwks_module.forget_all()


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    server = JwksServer(url="", keys=[K1])

    async def handler(request: web.Request) -> web.Response:
        server.hits += 1
        if server.gate is not None:
            await server.gate.wait()
        if server.hang:
            await server.release.wait()
        body = server.body if server.body is not None else jwks(*server.keys).encode()
        return web.Response(status=server.status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/jwks.json", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}/jwks.json"
    yield server
    if server.gate is not None:
        server.gate.set()
    server.release.set()
    await runner.cleanup()
