"""The HTTP/2 connection's life: ALPN selection on TLS (the hook the TLS listener uses),
graceful shutdown with streams in flight."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest
from aiohttp import web

from tests.proxy.h2.test_h2_downstream import needs_curl
from wardgate.proxy.h2.connection import DownstreamStream
from wardgate.proxy.h2.detect import ALPN_PROTOCOLS, DetectingServer, protocol_for_alpn
from wardgate.proxy.h2.settings import H2Settings


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A server certificate for localhost (the injector tests' throwaway CA)."""
    from tests.operator.test_injector_server import make_ca

    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    make_ca().issue(cert_path, key_path)
    return cert_path, key_path


def test_protocol_for_alpn():
    assert protocol_for_alpn("h2") == "h2"
    assert protocol_for_alpn("http/1.1") == "http/1.1"
    assert protocol_for_alpn(None) is None
    assert ALPN_PROTOCOLS[0] == "h2"


@needs_curl
async def test_tls_listener_selects_http2_by_alpn(tmp_path):
    """What the TLS listener does: offer ALPN_PROTOCOLS and serve DetectingServer."""
    cert, key = _self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(ALPN_PROTOCOLS)

    async def http1(request: web.BaseRequest) -> web.Response:
        return web.Response(text="http1")

    async def http2(stream: DownstreamStream) -> None:
        await stream.send_headers([(":status", "200"), ("content-length", "5")])
        await stream.send_data(b"http2", 5, end_stream=True)

    server = DetectingServer(http1, stream_handler=http2, h2_settings=H2Settings())
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, "127.0.0.1", 0, ssl=ctx)
    port = listener.sockets[0].getsockname()[1]
    try:
        for flag, expected in (("--http2", "2 http2"), ("--http1.1", "1.1 http1")):
            proc = await asyncio.create_subprocess_exec(
                "curl",
                "-sS",
                "-k",
                flag,
                "-w",
                " %{http_version}",
                f"https://localhost:{port}/",
                "--resolve",
                f"localhost:{port}:127.0.0.1",
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            out, err = await proc.communicate()
            body, _, version = out.decode().rpartition(" ")
            assert f"{version} {body}" == expected, err.decode()
    finally:
        listener.close()
        await server.shutdown(1)
        await listener.wait_closed()


@needs_curl
async def test_graceful_shutdown_lets_streams_in_flight_finish(upstream, tmp_path):
    """SIGTERM's path: GOAWAY(NO_ERROR) naming the last stream, the stream in flight still
    answered, then the process stops. (curl as the client: the h2 library's own client
    refuses frames after a GOAWAY, real clients do not.)"""
    import io

    from wardgate.config import load_policy_text
    from wardgate.observability.logs import AccessLog
    from wardgate.proxy.server import GatewayProcess, RunOptions
    from wardgate.runtime import compile_policy

    options = RunOptions(
        upstream=upstream, policy_path=None, listen_port=0, admin_port=None, drain_timeout=5.0
    )
    process = GatewayProcess(
        options, compile_policy(load_policy_text("")), False, AccessLog("ecs", io.StringIO())
    )
    await process.start()
    curl = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        f"http://{process.state.listen}/delay/0.6",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    await asyncio.sleep(0.3)  # the request is at the upstream
    process.stopping.set()
    await asyncio.wait_for(process.run_until_stopped(), 10)
    out, err = await curl.communicate()
    assert out.decode() == "2 200", err.decode()


@pytest.mark.parametrize("split", [1, 3, 10, 23])
async def test_preface_and_http1_requests_split_anywhere(upstream, gateway, split):
    """The protocol is decided by the first bytes however they are cut into segments: a
    request line sharing a prefix with the preface (``P``, ``PO``...) stays HTTP/1.1."""
    gw = await gateway(upstream)
    host, port = gw.process.state.listen.rsplit(":", 1)
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(preface[:split])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(preface[split:])
    head = await asyncio.wait_for(reader.readexactly(9), 5)
    assert head[3] == 0x04  # the server's SETTINGS frame: HTTP/2
    writer.close()
    request = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request[:split])
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.write(request[split:])
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert response.startswith(b"HTTP/1.1 200")


async def test_idle_connections_get_goaway_then_close(upstream, gateway):
    from tests.proxy.h2.conftest import RawH2

    gw = await gateway(upstream, "", http2=H2Settings(connection_idle_timeout=0.5))
    client = await asyncio.to_thread(RawH2, gw.process.state.listen)
    sid = client.request("/echo")
    await asyncio.to_thread(client.pump, 3)
    client.close()
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == 0 and goaway.last_stream_id == sid
    assert client.closed  # the gateway closed after the GOAWAY, not the test's timeout
