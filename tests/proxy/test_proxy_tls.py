"""Downstream TLS and mutual TLS on the proxy listener: real certificates made here, real
TLS clients (Python's ssl in a thread, curl), real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import GatewayFactory, InProcessGateway
from tests.tls_support import NOW, Ca, client_context
from wardgate.observability import metrics
from wardgate.proxy.tls import TlsOptions, sni_allowed

SPIFFE = "spiffe://cluster.local/ns/shop/sa/billing"


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = Ca()
    d = tmp_path / "pki"
    return {
        "ca": ca,
        "dir": d,
        "ca_file": ca.write(d),
        "server": ca.issue(
            "gateway",
            dns=("gateway.test", "localhost"),
            uris=("spiffe://cluster.local/ns/shop/sa/orders",),
            usage="server",
        ).write(d, "server"),
        "client": ca.issue(
            "billing",
            uris=(SPIFFE,),
            dns=("billing.shop.svc",),
            usage="client",
            organization="shop",
        ).write(d, "client"),
    }


async def _start(gateway: GatewayFactory, upstream: str, pki: dict[str, Any], **tls: Any) -> Any:
    cert, key = pki["server"]
    options = TlsOptions(cert=cert, key=key, **tls)
    return await gateway(upstream, "", tls=options)


def _exchange(
    port: int,
    ctx: ssl.SSLContext,
    request: bytes = b"GET /echo HTTP/1.1\r\nHost: gateway.test\r\n\r\n",
    sni: str | None = "localhost",
) -> bytes:
    """One HTTPS request with a blocking client (run it in a thread); the raw response."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            tls.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data or not _complete(data):
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


def _body(data: bytes) -> Any:
    return json.loads(data.partition(b"\r\n\r\n")[2])


def _port(gw: InProcessGateway) -> int:
    return int(gw.process.state.listen.rsplit(":", 1)[1])


def _handshakes(reason: str, result: str = "failure") -> float:
    return metrics.TLS_HANDSHAKES.labels(result=result, reason=reason)._value.get()


async def test_https_serves_and_plain_http_on_the_port_is_refused(
    gateway: GatewayFactory, upstream: str, pki: dict[str, Any]
) -> None:
    gw = await _start(gateway, upstream, pki)
    port = _port(gw)
    data = await asyncio.to_thread(_exchange, port, client_context(pki["ca_file"]))
    assert data.startswith(b"HTTP/1.1 200")
    echoed = {k.lower(): v for k, v in _body(data)["headers"]}
    assert echoed["x-forwarded-proto"] == "https"
    assert "x-forwarded-client-cert" not in echoed  # TLS without a client certificate

    before = _handshakes("plain_http")

    def plain() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            return raw.recv(1000)

    assert not (await asyncio.to_thread(plain)).startswith(b"HTTP/")
    await asyncio.sleep(0.05)
    assert _handshakes("plain_http") == before + 1


async def test_tls_versions_and_alpn(
    gateway: GatewayFactory, upstream: str, pki: dict[str, Any]
) -> None:
    gw = await _start(gateway, upstream, pki)
    port = _port(gw)

    def negotiated(version: ssl.TLSVersion) -> tuple[str | None, str | None]:
        ctx = client_context(pki["ca_file"])
        ctx.minimum_version = ctx.maximum_version = version
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.version(), tls.selected_alpn_protocol()

    # h2 preferred when the client offers it (Envoy's default), HTTP/1.1 otherwise.
    assert await asyncio.to_thread(negotiated, ssl.TLSVersion.TLSv1_3) == ("TLSv1.3", "h2")
    assert await asyncio.to_thread(negotiated, ssl.TLSVersion.TLSv1_2) == ("TLSv1.2", "h2")


def _h2_exchange(port: int, ctx: ssl.SSLContext, headers: list[tuple[str, str]]) -> Any:
    """One HTTP/2 GET /echo over TLS (ALPN h2) with the ``h2`` state machine; the echoed
    request as JSON."""
    import h2.config
    import h2.connection
    import h2.events

    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() == "h2"
            conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            conn.initiate_connection()
            request = [
                (":method", "GET"),
                (":path", "/echo"),
                (":scheme", "https"),
                (":authority", "gateway.test"),
                *headers,
            ]
            conn.send_headers(1, request, end_stream=True)
            tls.sendall(conn.data_to_send())
            body, status, ended = b"", "", False
            while not ended:
                data = tls.recv(65536)
                assert data, "connection closed before the response ended"
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived):
                        status = dict(event.headers)[b":status"].decode()
                    elif isinstance(event, h2.events.DataReceived):
                        body += event.data
                        conn.acknowledge_received_data(len(event.data), 1)
                    elif isinstance(event, h2.events.StreamEnded):
                        ended = True
                tls.sendall(conn.data_to_send())
            assert status == "200", (status, body[:200])
            return json.loads(body)


async def test_http2_over_mutual_tls_carries_the_identity_and_never_a_client_xfcc(
    gateway: GatewayFactory, upstream: str, pki: dict[str, Any]
) -> None:
    gw = await _start(gateway, upstream, pki, client_ca=pki["ca_file"])
    ctx = client_context(pki["ca_file"], pki["client"])
    forged = [("x-forwarded-client-cert", "By=spiffe://evil;URI=spiffe://cluster.local/ns/admin")]
    echoed = await asyncio.to_thread(_h2_exchange, _port(gw), ctx, forged)
    xfcc = [v for k, v in echoed["headers"] if k.lower() == "x-forwarded-client-cert"]
    der = ssl.PEM_cert_to_DER_cert(Path(pki["client"][0]).read_text())
    assert len(xfcc) == 1
    assert f"Hash={hashlib.sha256(der).hexdigest()};" in xfcc[0]
    assert f"URI={SPIFFE}" in xfcc[0] and "evil" not in xfcc[0]
    record = gw.access_records()[-1]
    assert record["tls.client.principal"] == SPIFFE


async def test_http2_over_tls_without_client_certificate_strips_a_client_xfcc(
    gateway: GatewayFactory, upstream: str, pki: dict[str, Any]
) -> None:
    gw = await _start(gateway, upstream, pki)
    forged = [("x-forwarded-client-cert", "URI=spiffe://cluster.local/ns/admin")]
    echoed = await asyncio.to_thread(
        _h2_exchange, _port(gw), client_context(pki["ca_file"]), forged
    )
    assert not [k for k, _ in echoed["headers"] if k.lower() == "x-forwarded-client-cert"]


def _old_protocol_client(ca_file: str) -> ssl.SSLContext:
    ctx = client_context(ca_file)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.warns(DeprecationWarning):
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


async def test_mutual_tls_forwards_the_verified_identity_and_never_a_client_xfcc(
    gateway: GatewayFactory, upstream: str, pki: dict[str, Any]
) -> None:
    gw = await _start(gateway, upstream, pki, client_ca=pki["ca_file"])
    forged = (
        b"GET /echo HTTP/1.1\r\nHost: gateway.test\r\n"
        b"X-Forwarded-Client-Cert: By=spiffe://evil;URI=spiffe://cluster.local/ns/admin\r\n\r\n"
    )
    ctx = client_context(pki["ca_file"], pki["client"])
    data = await asyncio.to_thread(_exchange, _port(gw), ctx, forged)
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    xfcc = [v for k, v in _body(data)["headers"] if k.lower() == "x-forwarded-client-cert"]
    assert len(xfcc) == 1
    der = ssl.PEM_cert_to_DER_cert(Path(pki["client"][0]).read_text())
    assert xfcc[0] == (
        "By=spiffe://cluster.local/ns/shop/sa/orders;"
        f"Hash={hashlib.sha256(der).hexdigest()};"
        'Subject="O=shop,CN=billing";'
        f"URI={SPIFFE};DNS=billing.shop.svc"
    )
    record = gw.access_records()[-1]
    assert record["tls.client.principal"] == SPIFFE
    assert record["tls.client.x509.alternative_names"] == [SPIFFE, "billing.shop.svc"]
    assert record["tls.client.hash.sha256"] == hashlib.sha256(der).hexdigest()


def _bad_clients(pki: dict[str, Any]) -> dict[str, tuple[ssl.SSLContext, str | None]]:
    ca: Ca = pki["ca"]
    d: Path = pki["dir"]
    other = Ca("Another CA").issue("billing", uris=(SPIFFE,), usage="client").write(d, "other")
    expired = ca.issue(
        "old",
        usage="client",
        not_before=NOW - dt.timedelta(days=3),
        not_after=NOW - dt.timedelta(days=1),
    ).write(d, "expired")
    future = ca.issue(
        "new",
        usage="client",
        not_before=NOW + dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=3),
    ).write(d, "future")
    server_only = ca.issue("server-only", usage="server").write(d, "server-only")
    caf = pki["ca_file"]
    return {
        "unknown_ca": (client_context(caf, other), "localhost"),
        "expired": (client_context(caf, expired), "localhost"),
        "not_yet_valid": (client_context(caf, future), "localhost"),
        "bad_key_usage": (client_context(caf, server_only), "localhost"),
        "no_client_certificate": (client_context(caf), "localhost"),
        "sni_mismatch": (client_context(caf, pki["client"], check_hostname=False), "other.test"),
        "old_protocol": (_old_protocol_client(caf), "localhost"),
    }


async def test_bad_handshakes_are_refused_counted_and_logged_and_others_still_served(
    gateway: GatewayFactory,
    upstream: str,
    pki: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await _start(gateway, upstream, pki, client_ca=pki["ca_file"])
    port = _port(gw)
    good = client_context(pki["ca_file"], pki["client"])
    for reason, (ctx, sni) in _bad_clients(pki).items():
        before = _handshakes(reason)
        caplog.clear()
        # TLS 1.3 clients finish before the server checks their certificate: the refusal
        # then shows on the first read, as an error or as the connection's end.
        try:
            answer = await asyncio.to_thread(_exchange, port, ctx, sni=sni)
        except (ssl.SSLError, ConnectionError):
            answer = b""
        assert answer == b"", reason
        await asyncio.sleep(0.05)
        assert _handshakes(reason) == before + 1, reason
        logged = [r for r in caplog.records if r.name == "wardgate.tls"]
        assert logged and logged[-1].wardgate["tls"]["reason"] == reason  # type: ignore[attr-defined]
        # The gateway keeps serving everyone else.
        data = await asyncio.to_thread(_exchange, port, good)
        assert data.startswith(b"HTTP/1.1 200"), reason


async def test_a_stalled_handshake_times_out_without_blocking_others(
    gateway: GatewayFactory, upstream: str, pki: dict[str, Any]
) -> None:
    gw = await _start(gateway, upstream, pki, handshake_timeout=0.5)
    port = _port(gw)
    before = _handshakes("timeout")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # never says hello
    data = await asyncio.to_thread(_exchange, port, client_context(pki["ca_file"]))
    assert data.startswith(b"HTTP/1.1 200")
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(reader.read(100), 5) == b""  # dropped by the gateway
    assert asyncio.get_running_loop().time() - started < 2
    writer.close()
    for _ in range(50):
        if _handshakes("timeout") == before + 1:
            break
        await asyncio.sleep(0.02)
    assert _handshakes("timeout") == before + 1


def _replace_atomically(directory: Path, files: dict[str, bytes]) -> None:
    """What the kubelet does for a Secret volume: write a new timestamped directory, then
    swap the ``..data`` symlink in one rename."""
    stamp = directory / f"..{os.urandom(4).hex()}"
    stamp.mkdir()
    for name, content in files.items():
        (stamp / name).write_bytes(content)
    tmp = directory / "..data_tmp"
    tmp.symlink_to(stamp.name)
    os.replace(tmp, directory / "..data")
    for name in files:
        link = directory / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


def _reloads(result: str) -> float:
    return metrics.TLS_RELOADS.labels(result=result)._value.get()


async def _until_reloads(result: str, count: float) -> None:
    for _ in range(100):
        if _reloads(result) >= count:
            return
        await asyncio.sleep(0.05)


def _served_cert(port: int, ca_file: str) -> bytes:
    ctx = client_context(ca_file)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            return der


async def test_rotation_through_the_secret_symlink_swap_keeps_connections_and_bad_pairs(
    gateway: GatewayFactory, upstream: str, pki: dict[str, Any], tmp_path: Path
) -> None:
    ca: Ca = pki["ca"]
    secret = tmp_path / "secret"
    secret.mkdir()
    first = ca.issue("gw-1", dns=("localhost",), usage="server")
    _replace_atomically(secret, {"tls.crt": first.cert_pem, "tls.key": first.key_pem})
    gw = await gateway(
        upstream,
        "",
        tls=TlsOptions(cert=str(secret / "tls.crt"), key=str(secret / "tls.key")),
        reload_interval=0.05,
    )
    port = _port(gw)
    assert await asyncio.to_thread(_served_cert, port, pki["ca_file"]) == first.der

    # A keep-alive connection opened before the rotation.
    ctx = client_context(pki["ca_file"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    kept = await asyncio.to_thread(ctx.wrap_socket, raw, server_hostname="localhost")
    request = b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n"

    def on_kept() -> bytes:
        kept.sendall(request)
        data = b""
        while not (b"\r\n\r\n" in data and _complete(data)):
            data += kept.recv(65536)
        return data

    assert (await asyncio.to_thread(on_kept)).startswith(b"HTTP/1.1 200")

    second = ca.issue("gw-2", dns=("localhost",), usage="server")
    ok_before = _reloads("success")
    _replace_atomically(secret, {"tls.crt": second.cert_pem, "tls.key": second.key_pem})
    await _until_reloads("success", ok_before + 1)
    assert await asyncio.to_thread(_served_cert, port, pki["ca_file"]) == second.der
    assert (await asyncio.to_thread(on_kept)).startswith(b"HTTP/1.1 200")  # not dropped

    # A broken pair (the key of another certificate): the last good one stays.
    third = ca.issue("gw-3", dns=("localhost",), usage="server")
    failed_before = _reloads("failure")
    _replace_atomically(secret, {"tls.crt": third.cert_pem, "tls.key": first.key_pem})
    await _until_reloads("failure", failed_before + 1)
    assert _reloads("failure") == failed_before + 1
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gw.admin_url}/server_info") as response:
            info = (await response.json())["tls"]
    assert "cannot load the pair" in info["last_reload_error"]
    assert info["not_after"] == int(second.cert.not_valid_after_utc.timestamp())
    assert await asyncio.to_thread(_served_cert, port, pki["ca_file"]) == second.der
    kept.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_with_a_client_certificate(
    gateway: GatewayFactory, upstream: str, pki: dict[str, Any]
) -> None:
    gw = await _start(gateway, upstream, pki, client_ca=pki["ca_file"])
    port = _port(gw)
    base = [
        "curl",
        "-sS",
        "--cacert",
        pki["ca_file"],
        "--resolve",
        f"gateway.test:{port}:127.0.0.1",
        f"https://gateway.test:{port}/echo",
    ]
    cert, key = pki["client"]

    def curl(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *extra], capture_output=True, text=True, timeout=20, check=False
        )

    ok = await asyncio.to_thread(curl, "--cert", cert, "--key", key)
    assert ok.returncode == 0, ok.stderr
    assert f"URI={SPIFFE}" in ok.stdout
    refused = await asyncio.to_thread(curl)
    assert refused.returncode != 0
    old = await asyncio.to_thread(curl, "--cert", cert, "--key", key, "--tls-max", "1.1")
    assert old.returncode != 0


def test_sni_matching() -> None:
    names = ("gateway.test", "*.shop.svc")
    assert sni_allowed("gateway.test", names)
    assert sni_allowed("GATEWAY.test.", names)
    assert sni_allowed("orders.shop.svc", names)
    assert not sni_allowed("a.b.shop.svc", names)
    assert not sni_allowed("shop.svc", names)
    assert not sni_allowed("evil.test", names)
    assert sni_allowed("anything", ())


def test_options_must_be_complete() -> None:
    with pytest.raises(ValueError, match="go together"):
        TlsOptions(cert="a.crt")
    with pytest.raises(ValueError, match="needs --tls-cert"):
        TlsOptions(client_ca="ca.crt")
    with pytest.raises(ValueError, match="go together"):
        TlsOptions(upstream_cert="c.crt")


PEER_POLICY = """
peer:
  rules:
    - match: {prefix: /echo, methods: [GET]}
      principals:
        - uri: {prefix: "spiffe://cluster.local/ns/shop/"}
"""


async def test_policy_principals_over_mutual_tls(
    gateway: GatewayFactory, upstream: str, pki: dict[str, Any]
) -> None:
    cert, key = pki["server"]
    gw = await gateway(
        upstream, PEER_POLICY, tls=TlsOptions(cert=cert, key=key, client_ca=pki["ca_file"])
    )
    port = _port(gw)
    allowed = await asyncio.to_thread(
        _exchange, port, client_context(pki["ca_file"], pki["client"])
    )
    assert allowed.startswith(b"HTTP/1.1 200")
    intruder = pki["ca"].issue(
        "intruder", uris=("spiffe://cluster.local/ns/other/sa/intruder",), usage="client"
    )
    paths = intruder.write(pki["dir"], "intruder")
    refused = await asyncio.to_thread(_exchange, port, client_context(pki["ca_file"], paths))
    assert refused.startswith(b"HTTP/1.1 403")
    problem = _body(refused)
    assert problem["reason"] == "principal_not_allowed"
    assert "spiffe://cluster.local/ns/other/sa/intruder" in problem["violations"][0]["message"]
    record = gw.access_records()[-1]
    assert record["wardgate"]["replied_by"] == "peer"
    assert record["tls.client.principal"] == "spiffe://cluster.local/ns/other/sa/intruder"


async def test_policy_principals_without_mutual_tls_refuse(
    gateway: GatewayFactory, upstream: str
) -> None:
    gw = await gateway(upstream, PEER_POLICY)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gw.url}/echo") as response:
            assert response.status == 403
            assert (await response.json())["reason"] == "no_client_certificate"


async def test_workers_serve_tls_as_a_real_process(
    gateway_process: Any, upstream: str, pki: dict[str, Any]
) -> None:
    cert, key = pki["server"]
    gw = gateway_process(
        "--upstream",
        upstream,
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--workers",
        "2",
        marker='"supervising workers"',
    )
    ctx = client_context(pki["ca_file"])
    deadline = asyncio.get_running_loop().time() + 30
    async with aiohttp.ClientSession() as session:
        while True:  # workers start after the supervisor logs
            try:
                async with session.get(
                    f"https://localhost:{gw.listen.rsplit(':', 1)[1]}/echo", ssl=ctx
                ) as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientConnectorError:
                pass
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_unusable_tls_files_refuse_to_start(
    gateway_process: Any, pki: dict[str, Any], workers: str
) -> None:
    cert, _ = pki["server"]
    other_key = pki["client"][1]  # a key that does not match the certificate
    gw = gateway_process(
        "--upstream",
        "http://127.0.0.1:9",
        "--tls-cert",
        cert,
        "--tls-key",
        other_key,
        "--workers",
        workers,
        wait=False,
    )
    assert gw.popen.wait(30) == 1
    text = "\n".join(gw.stderr_lines)
    assert "cannot load the pair" in text
    assert "PRIVATE KEY" not in text  # never key material


def test_tls_arguments_are_checked() -> None:
    from tests.conftest import run_wardgate

    result = run_wardgate("run", "--upstream", "http://127.0.0.1:1", "--tls-cert", "a.crt")
    assert result.returncode == 2 and "go together" in result.stderr
    result = run_wardgate("run", "--upstream", "http://127.0.0.1:1", "--upstream-ca", "x")
    assert result.returncode == 2 and "https://" in result.stderr


async def test_client_ca_rotation_applies_to_new_handshakes(
    gateway: GatewayFactory, upstream: str, pki: dict[str, Any], tmp_path: Path
) -> None:
    cert, key = pki["server"]
    bundle = tmp_path / "client-ca.crt"
    bundle.write_bytes(pki["ca"].pem)
    gw = await gateway(
        upstream,
        "",
        tls=TlsOptions(cert=cert, key=key, client_ca=str(bundle)),
        reload_interval=0.05,
    )
    port = _port(gw)
    old_client = client_context(pki["ca_file"], pki["client"])
    assert (await asyncio.to_thread(_exchange, port, old_client)).startswith(b"HTTP/1.1 200")

    new_ca = Ca("Next CA")
    new_client = client_context(
        pki["ca_file"], new_ca.issue("next", uris=(SPIFFE,), usage="client").write(tmp_path, "n")
    )
    before = _reloads("success")
    tmp = tmp_path / "client-ca.tmp"
    tmp.write_bytes(new_ca.pem)
    os.replace(tmp, bundle)  # the old CA is no longer trusted
    await _until_reloads("success", before + 1)

    assert (await asyncio.to_thread(_exchange, port, new_client)).startswith(b"HTTP/1.1 200")
    try:
        refused = await asyncio.to_thread(_exchange, port, old_client)
    except (ssl.SSLError, ConnectionError):
        refused = b""
    assert refused == b""


async def test_no_session_tickets_under_mutual_tls(
    gateway: GatewayFactory, upstream: str, pki: dict[str, Any]
) -> None:
    mutual = _port(await _start(gateway, upstream, pki, client_ca=pki["ca_file"]))
    plain = _port(await _start(gateway, upstream, pki))

    def session_ticket(port: int) -> bool:
        ctx = client_context(pki["ca_file"], pki["client"])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /echo HTTP/1.1\r\nHost: localhost\r\n\r\n")
                tls.recv(65536)  # tickets, when sent, arrive before the response
                return tls.session is not None and tls.session.has_ticket

    assert not await asyncio.to_thread(session_ticket, mutual)
    assert await asyncio.to_thread(session_ticket, plain)  # the control: tickets otherwise
