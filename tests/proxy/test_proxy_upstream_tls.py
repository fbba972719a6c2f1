"""TLS to the upstream: verification against a private CA, SNI from the URL or an option,
a client certificate for upstreams that require one, and fail-closed refusals (503 ``UF``,
reason in the access log)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import GatewayFactory
from tests.tls_support import Ca
from wardgate.observability import metrics
from wardgate.proxy.tls import TlsConfigError, TlsOptions
from wardgate.proxy.upstream import Upstream

HttpsUpstream = Callable[..., Any]


@pytest.fixture
async def https_upstream() -> AsyncIterator[HttpsUpstream]:
    """Start an HTTPS upstream: ``await https_upstream(cert_paths, client_ca=None)``;
    it answers with the client certificate's subject it saw (if any)."""
    runners: list[web.ServerRunner] = []

    async def handler(request: web.BaseRequest) -> web.Response:
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        peer = ssl_object.getpeercert() if ssl_object is not None else None
        subject = dict(x[0] for x in peer["subject"]) if peer else {}
        return web.json_response(
            {"client": subject.get("commonName", ""), "sni": request.host, "path": request.path}
        )

    async def start(cert: tuple[str, str], client_ca: str | None = None) -> int:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert)
        if client_ca is not None:
            ctx.load_verify_locations(cafile=client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        runner = web.ServerRunner(web.Server(handler))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        runners.append(runner)
        return int(runner.addresses[0][1])

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = Ca("Upstream CA")
    d = tmp_path / "pki"
    return {
        "ca": ca,
        "dir": d,
        "ca_file": ca.write(d),
        "upstream": ca.issue("orders", dns=("orders.internal",), usage="server").write(d, "up"),
        "at_ip": ca.issue("orders", ips=("127.0.0.1",), usage="server").write(d, "ip"),
        "client": ca.issue("gateway-client", usage="client").write(d, "client"),
    }


async def _get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        body = await response.read()
        return response.status, body


async def test_verified_upstream_with_private_ca(
    gateway: GatewayFactory, https_upstream: HttpsUpstream, pki: dict[str, Any]
) -> None:
    port = await https_upstream(pki["at_ip"])
    gw = await gateway(f"https://127.0.0.1:{port}", "", tls=TlsOptions(upstream_ca=pki["ca_file"]))
    status, body = await _get(f"{gw.url}/x")
    assert status == 200, body
    assert b'"path": "/x"' in body


async def test_sni_option_names_the_upstream_and_is_verified(
    gateway: GatewayFactory, https_upstream: HttpsUpstream, pki: dict[str, Any]
) -> None:
    port = await https_upstream(pki["upstream"])  # a certificate for orders.internal only
    url = f"https://127.0.0.1:{port}"
    with_sni = await gateway(
        url, "", tls=TlsOptions(upstream_ca=pki["ca_file"], upstream_sni="orders.internal")
    )
    assert (await _get(f"{with_sni.url}/x"))[0] == 200

    without = await gateway(url, "", tls=TlsOptions(upstream_ca=pki["ca_file"]))
    before = metrics.UPSTREAM_TLS_FAILURES._value.get()
    status, body = await _get(f"{without.url}/x")
    assert status == 503
    assert body.startswith(b"upstream connect error")
    record = without.access_records()[-1]
    assert record["wardgate"]["response_flags"] == "UF"
    assert record["wardgate"]["reason"] == "tls_handshake_failed"
    assert metrics.UPSTREAM_TLS_FAILURES._value.get() == before + 1


async def test_an_upstream_from_another_ca_is_refused(
    gateway: GatewayFactory, https_upstream: HttpsUpstream, pki: dict[str, Any]
) -> None:
    rogue = Ca("Rogue").issue("orders", ips=("127.0.0.1",), usage="server")
    port = await https_upstream(rogue.write(pki["dir"], "rogue"))
    gw = await gateway(f"https://127.0.0.1:{port}", "", tls=TlsOptions(upstream_ca=pki["ca_file"]))
    status, _ = await _get(f"{gw.url}/x")
    assert status == 503
    assert gw.access_records()[-1]["wardgate"]["reason"] == "tls_handshake_failed"


async def test_client_certificate_for_an_upstream_that_requires_one(
    gateway: GatewayFactory, https_upstream: HttpsUpstream, pki: dict[str, Any]
) -> None:
    port = await https_upstream(pki["at_ip"], client_ca=pki["ca_file"])
    url = f"https://127.0.0.1:{port}"
    cert, key = pki["client"]
    gw = await gateway(
        url, "", tls=TlsOptions(upstream_ca=pki["ca_file"], upstream_cert=cert, upstream_key=key)
    )
    status, body = await _get(f"{gw.url}/x")
    assert status == 200, body
    assert b'"client": "gateway-client"' in body

    without = await gateway(url, "", tls=TlsOptions(upstream_ca=pki["ca_file"]))
    status, _ = await _get(f"{without.url}/x")
    assert status == 503  # refused by the upstream: no request went through


def test_upstream_tls_options_need_https_and_usable_files(pki: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="https"):
        Upstream("http://127.0.0.1:1", TlsOptions(upstream_ca=pki["ca_file"]))
    with pytest.raises(TlsConfigError, match="cannot load the CA bundle"):
        Upstream("https://127.0.0.1:1", TlsOptions(upstream_ca=pki["client"][1]))
