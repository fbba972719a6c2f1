"""Remote JWKS over TLS: a per-provider CA bundle (``remoteJwks.trustedCa``), verification
always on, and the standard proxy variables (``HTTPS_PROXY``, ``NO_PROXY``) through a real
CONNECT proxy."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.filters.jwt_authn.conftest import K1
from tests.filters.jwt_authn.helpers import ISSUER, claims, compiled, jwks, policy, send
from tests.tls_support import Ca
from wardgate.filters.api import FilterCompileError
from wardgate.filters.jwt_authn import jwks as jwks_module
from wardgate.filters.jwt_authn import stats


@pytest.fixture
async def https_jwks(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    ca = Ca("JWKS CA")
    cert = ca.issue("idp", dns=("localhost",), usage="server").write(tmp_path, "idp")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*cert)
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(body=jwks(K1).encode(), content_type="application/json")

    app = web.Application()
    app.router.add_get("/jwks.json", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = runner.addresses[0][1]
    yield {
        "url": f"https://localhost:{port}/jwks.json",
        "ca_file": ca.write(tmp_path, "jwks-ca"),
        "ca_pem": ca.pem.decode(),
        "hits": hits,
    }
    await runner.cleanup()


def _policy(url: str, **remote: Any) -> str:
    provider = {
        "issuer": ISSUER,
        "remoteJwks": {"httpUri": {"uri": url, "timeout": "2s"}, **remote},
    }
    return policy({"idp": provider})


async def test_trusted_ca_file_and_inline(https_jwks: dict[str, Any]) -> None:
    pol = compiled(_policy(https_jwks["url"], trustedCa={"filename": https_jwks["ca_file"]}))
    assert (await send(pol, token=K1.sign(claims()))).status == 200

    jwks_module.forget_all()
    pol = compiled(_policy(https_jwks["url"], trustedCa={"inlineString": https_jwks["ca_pem"]}))
    assert (await send(pol, token=K1.sign(claims()))).status == 200
    assert len(https_jwks["hits"]) == 2


async def test_without_the_ca_the_server_is_not_trusted(https_jwks: dict[str, Any]) -> None:
    before = stats.JWKS_FETCHES.labels(result="tls_error")._value.get()
    pol = compiled(_policy(https_jwks["url"]))  # the system store does not know this CA
    out = await send(pol, token=K1.sign(claims()))
    assert (out.status, out.reason) == (503, "jwks_unavailable")
    assert stats.JWKS_FETCHES.labels(result="tls_error")._value.get() == before + 1
    assert https_jwks["hits"] == []


def test_an_unusable_ca_bundle_is_a_compile_error(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(FilterCompileError) as info:
        compiled(_policy("https://idp.example/jwks.json", trustedCa={"filename": str(bad)}))
    assert "jwt.providers.idp.remoteJwks.trustedCa.filename" in str(info.value)


@contextlib.asynccontextmanager
async def connect_proxy() -> AsyncIterator[tuple[str, list[str]]]:
    """A minimal HTTP CONNECT proxy recording the targets it tunnels to."""
    seen: list[str] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
        finally:  # also when cancelled at loop shutdown: no socket left to the collector
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
            seen.append(f"{method} {target}")
            _host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()


async def test_https_proxy_variable_is_used_and_no_proxy_bypasses_it(
    https_jwks: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:

    async with connect_proxy() as (proxy_url, seen):
        monkeypatch.setenv("HTTPS_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        pol = compiled(_policy(https_jwks["url"], trustedCa={"filename": https_jwks["ca_file"]}))
        assert (await send(pol, token=K1.sign(claims()))).status == 200
        assert len(seen) == 1 and seen[0].startswith("CONNECT localhost:")

        jwks_module.forget_all()
        monkeypatch.setenv("NO_PROXY", "localhost")
        pol = compiled(_policy(https_jwks["url"], trustedCa={"filename": https_jwks["ca_file"]}))
        assert (await send(pol, token=K1.sign(claims()))).status == 200
        assert len(seen) == 1  # bypassed
    assert len(https_jwks["hits"]) == 2
