"""What the upstream receives and what the client gets back: Envoy HTTP connection manager
semantics over real sockets."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp

from tests.proxy.rawhttp import raw_request


async def _echo(gw_url: str, path: str = "/echo", **kwargs: object) -> tuple[int, dict, dict]:
    async with aiohttp.ClientSession(skip_auto_headers=("User-Agent",)) as session:
        async with session.get(gw_url + path, **kwargs) as resp:  # type: ignore[arg-type]
            body = await resp.json()
            return resp.status, dict(resp.headers), body


def _upstream_headers(echo: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def test_host_preserved_request_id_generated_and_forwarded_headers(upstream, gateway):
    gw = await gateway(upstream)
    status, headers, echo = await _echo(gw.url, headers={"Host": "api.example.com"})
    assert status == 200
    seen = _upstream_headers(echo)
    assert seen["host"] == ["api.example.com"]
    uuid.UUID(seen["x-request-id"][0])  # a generated UUID
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-proto"] == ["http"]
    assert int(headers["x-envoy-upstream-service-time"]) >= 0
    # No header the client did not send (besides the forwarding ones) was added upstream.
    assert set(seen) <= {
        "host",
        "x-request-id",
        "x-forwarded-for",
        "x-forwarded-proto",
        "accept",
        "accept-encoding",
        "content-length",
    }


async def test_client_request_id_kept_and_xff_appended(upstream, gateway):
    gw = await gateway(upstream)
    _, _, echo = await _echo(
        gw.url, headers={"x-request-id": "abc-123", "x-forwarded-for": "203.0.113.7"}
    )
    seen = _upstream_headers(echo)
    assert seen["x-request-id"] == ["abc-123"]
    assert seen["x-forwarded-for"] == ["203.0.113.7, 127.0.0.1"]


async def test_request_id_regenerated_when_policy_says_not_to_preserve(upstream, gateway):
    gw = await gateway(upstream, "proxy: {preserveExternalRequestId: false}")
    _, _, echo = await _echo(gw.url, headers={"x-request-id": "abc-123"})
    assert _upstream_headers(echo)["x-request-id"] != ["abc-123"]


async def test_forwarded_proto_kept_only_behind_trusted_hops(upstream, gateway):
    untrusting = await gateway(upstream)
    _, _, echo = await _echo(untrusting.url, headers={"x-forwarded-proto": "https"})
    assert _upstream_headers(echo)["x-forwarded-proto"] == ["http"]
    trusting = await gateway(upstream, "proxy: {xffNumTrustedHops: 1}")
    _, _, echo = await _echo(
        trusting.url, headers={"x-forwarded-proto": "https", "x-forwarded-for": "198.51.100.1"}
    )
    assert _upstream_headers(echo)["x-forwarded-proto"] == ["https"]
    record = trusting.access_records()[-1]
    assert record["client.address"] == "198.51.100.1"


async def test_hop_by_hop_headers_removed(upstream, gateway):
    gw = await gateway(upstream)
    response = await raw_request(
        gw.process.state.listen,
        b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret-Hop\r\n"
        b"X-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\n"
        b"Upgrade: h2c\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Foo: 1\r\n"
        b"X-End-To-End: kept\r\n\r\n",
    )
    assert response.status == 200
    seen = _upstream_headers(response.json())
    for name in (
        "connection",
        "x-secret-hop",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-foo",
    ):
        assert name not in seen, name
    assert seen["x-end-to-end"] == ["kept"]


async def test_path_and_query_forwarded_byte_exact(upstream, gateway):
    # `/../` is path traversal to the WAF; this test is about byte-exact forwarding.
    gw = await gateway(upstream, "waf: {mode: off}")
    target = b"/echo/a/../b%2Fc;p=1//d?x=%41%2b&y=&y=2&z=%E2%82%AC"
    response = await raw_request(
        gw.process.state.listen, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    echo = response.json()
    assert (echo["path"] + "?" + echo["query"]).encode() == target


async def test_multiple_response_headers_and_status_pass_through(upstream, gateway):
    gw = await gateway(upstream)
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/status/418") as resp:
            assert resp.status == 418
        async with session.head(gw.url + "/bytes/1000") as resp:
            assert resp.status == 200
            assert resp.headers["content-length"] == "1000"
            assert await resp.read() == b""


async def test_keep_alive_connections_are_reused(upstream, gateway):
    gw = await gateway(upstream)
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(20):
            async with session.get(gw.url + "/echo") as resp:
                assert resp.status == 200
                await resp.read()
    records = gw.access_records()
    assert len(records) == 20 and all(r["http.response.status_code"] == 200 for r in records)


async def test_concurrent_requests(upstream, gateway):
    gw = await gateway(upstream)
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> int:
            async with session.get(f"{gw.url}/echo?i={i}") as resp:
                body = await resp.json()
                assert body["query"] == f"i={i}"
                return resp.status

        statuses = await asyncio.gather(*(one(i) for i in range(100)))
    assert statuses == [200] * 100
