"""Real Envoy 1.40 on either side of Wardgate over HTTP/2: as the HTTP/2 client in front
of it (Envoy's cluster speaks h2c to Wardgate), and as the HTTP/2 upstream behind it."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from bench.harness import envoy_proxy_config

from tests.envoy.harness import free_port, start_envoy
from tests.proxy.h2.conftest import CHANNEL_OPTIONS, method
from wardgate.proxy.h2.settings import H2Settings

pytestmark = pytest.mark.slow


def _envoy_config(tmp: Path, listen: int, admin: int, upstream: int) -> Path:
    """The benchmark's Envoy (a plain reverse proxy), with an HTTP/2 upstream cluster."""
    path = tmp / f"envoy-h2-{listen}.yaml"
    path.write_text(envoy_proxy_config(listen, admin, upstream, http2_upstream=True))
    return path


async def _exercise(target: str, grpc_upstream) -> None:  # type: ignore[no-untyped-def]
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        call = method(channel, "unary_unary", "Unary")(b"through-envoy", metadata=(("x-m", "1"),))
        assert await call == b"through-envoy"
        assert dict(await call.trailing_metadata())["x-trailer"] == "t1"
        bidi = method(channel, "stream_stream", "Bidi")()
        for i in range(3):
            await bidi.write(b"%d" % i)
            assert await bidi.read() == b"echo:%d" % i
        await bidi.done_writing()
        assert await bidi.code() == grpc.StatusCode.OK
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await method(channel, "unary_unary", "Unary")(b"fail")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_upstream.metadata[0]["x-m"] == "1"


async def test_envoy_as_http2_client_in_front_of_wardgate(tmp_path, gateway, grpc_upstream):
    gw = await gateway(grpc_upstream.url, "", http2=H2Settings(upstream_protocol="auto"))
    wardgate_port = int(gw.process.state.listen.rsplit(":", 1)[1])
    listen, admin = free_port(), free_port()
    envoy = await start_envoy(_envoy_config(tmp_path, listen, admin, wardgate_port), listen, admin)
    try:
        await _exercise(f"127.0.0.1:{listen}", grpc_upstream)
        # Wardgate saw HTTP/2 from Envoy.
        assert {r["http.version"] for r in gw.access_records()} == {"2"}
    finally:
        envoy.stop()


async def test_envoy_as_http2_upstream_behind_wardgate(tmp_path, gateway, grpc_upstream):
    grpc_port = int(grpc_upstream.address.rsplit(":", 1)[1])
    listen, admin = free_port(), free_port()
    envoy = await start_envoy(_envoy_config(tmp_path, listen, admin, grpc_port), listen, admin)
    try:
        gw = await gateway(
            f"http://127.0.0.1:{listen}", "", http2=H2Settings(upstream_protocol="h2c")
        )
        await _exercise(gw.process.state.listen, grpc_upstream)
    finally:
        envoy.stop()


async def test_http1_clients_over_an_h2c_upstream_share_one_connection(tmp_path, gateway, upstream):
    """``--upstream-protocol h2c`` with HTTP/1.1 clients: Envoy (speaking h2c, in front of
    the demo service) sees every request, multiplexed on one HTTP/2 connection."""
    import asyncio
    import hashlib
    import json

    import aiohttp

    demo_port = int(upstream.rsplit(":", 1)[1])
    listen, admin = free_port(), free_port()
    path = tmp_path / "envoy-h1-upstream.yaml"
    path.write_text(envoy_proxy_config(listen, admin, demo_port, http2_upstream=False))
    envoy = await start_envoy(path, listen, admin)
    try:
        gw = await gateway(
            f"http://127.0.0.1:{listen}", "", http2=H2Settings(upstream_protocol="h2c")
        )
        body = b"x" * 300_000
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> dict:  # type: ignore[type-arg]
                async with session.post(
                    f"{gw.url}/echo?i={i}", data=body, headers={"x-i": str(i)}
                ) as resp:
                    assert resp.status == 200
                    return await resp.json()

            echoes = await asyncio.gather(*(one(i) for i in range(10)))
            async with session.get(
                f"{envoy.admin_url}/stats?filter=downstream_cx_http2_total"
            ) as resp:
                stats = await resp.text()
        for i, echo in enumerate(echoes):
            assert echo["query"] == f"i={i}"
            assert echo["bodySha256"] == hashlib.sha256(body).hexdigest()
            seen = {n.lower(): v for n, v in echo["headers"]}
            assert seen["x-i"] == str(i)
        assert "http.ingress.downstream_cx_http2_total: 1" in stats, stats
        records = gw.access_records()
        assert {r["http.version"] for r in records} == {"1.1"}
        assert json.dumps(records[-1])  # one record per request, like any other
        assert len(records) == 10
    finally:
        envoy.stop()
