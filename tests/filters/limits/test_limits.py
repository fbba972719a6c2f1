"""Limits and malformed input: a clear 4xx, nothing ambiguous forwarded, still serving."""

from __future__ import annotations

import aiohttp
import pytest

from tests.proxy.rawhttp import raw_request


async def test_limits_answer_414_431_413_405(recording_upstream, gateway):
    url, seen = recording_upstream
    gw = await gateway(
        url,
        "limits: {maxUrlBytes: 100, maxHeadersCount: 10, "
        "maxHeaderValueBytes: 200, maxRequestBodyBytes: 1000}",
    )
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/" + "a" * 200) as resp:
            assert resp.status == 414
            problem = await resp.json(content_type=None)
            assert problem["reason"] == "url_too_long"
            assert problem["violations"][0]["ruleId"] == "limits.maxUrlBytes"
        headers = {f"x-h{i}": "v" for i in range(12)}
        async with session.get(gw.url + "/", headers=headers) as resp:
            assert resp.status == 431
        async with session.get(gw.url + "/", headers={"x-big": "v" * 300}) as resp:
            assert resp.status == 431
            assert (await resp.json(content_type=None))["violations"][0]["location"] == (
                "header:x-big"
            )
        async with session.post(gw.url + "/", data=b"x" * 2000) as resp:
            assert resp.status == 413
        async with session.request("TRACE", gw.url + "/") as resp:
            assert resp.status == 405
            assert "GET" in resp.headers["allow"]
        async with session.post(gw.url + "/", data=b"x" * 1000) as resp:
            assert resp.status == 200
    assert [s[0] for s in seen] == ["POST"]


async def test_chunked_body_over_the_cap_is_413_and_cut(recording_upstream, gateway):
    url, seen = recording_upstream
    gw = await gateway(url, "limits: {maxRequestBodyBytes: 100000}")

    async def body():
        for _ in range(50):
            yield b"y" * 10000

    async with aiohttp.ClientSession() as session:
        async with session.post(gw.url + "/", data=body()) as resp:
            assert resp.status == 413
    assert all(len(s[2]) <= 100000 for s in seen)


@pytest.mark.parametrize(
    "payload",
    [
        b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabcd",
        b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header: v\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\nX-Ctl: a\x01b\r\n\r\n",
        b"GET\x00 /x HTTP/1.1\r\nHost: a\r\n\r\n",
        b"NOT A REQUEST\r\n\r\n",
        b"GET /x HTTP/9.9\r\nHost: a\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: a\r\n X-Folded: v\r\n\r\n",
        # Absolute form naming another host than Host (RFC 9112 3.2.2), either way round.
        b"GET http://other.example/a HTTP/1.1\r\nHost: t.local\r\n\r\n",
        b"GET http://t.local/a HTTP/1.1\r\nHost: other.example\r\n\r\n",
        b"GET http://other.example/a HTTP/1.1\r\nX-A: 1\r\nHost: t.local\r\n\r\n",
        b"GET http://t.local@other.example/a HTTP/1.1\r\nHost: t.local\r\n\r\n",
    ],
    ids=[
        "cl+te",
        "two-cl",
        "te-not-chunked",
        "space-in-name",
        "ctl-in-value",
        "nul-method",
        "garbage",
        "bad-version",
        "obs-fold",
        "absolute-form-other-host",
        "absolute-form-host-other",
        "absolute-form-host-last",
        "absolute-form-userinfo",
    ],
)
async def test_malformed_requests_get_400_and_are_not_forwarded(
    recording_upstream, gateway, payload
):
    url, seen = recording_upstream
    gw = await gateway(url)
    response = await raw_request(gw.process.state.listen, payload)
    assert 400 <= response.status < 500, response.raw[:200]
    assert seen == []
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/still-serving") as resp:
            assert resp.status == 200
    assert [s[1] for s in seen] == ["/still-serving"]


async def test_oversized_request_line_and_headers_beyond_parser_ceiling(
    recording_upstream, gateway
):
    url, seen = recording_upstream
    gw = await gateway(url)
    huge = b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert (await raw_request(gw.process.state.listen, huge)).status in (400, 414)
    many = (
        b"GET / HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(2000))
        + b"\r\n"
    )
    assert (await raw_request(gw.process.state.listen, many)).status in (400, 431)
    assert seen == []


async def test_short_body_is_refused_and_not_forwarded(recording_upstream, gateway):
    url, seen = recording_upstream
    gw = await gateway(url)
    host, _, port = gw.process.state.listen.rpartition(":")
    import asyncio

    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabcde")
    await writer.drain()
    writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data == b"" or data.startswith(b"HTTP/1.1 400")
    assert seen == []


@pytest.mark.parametrize(
    ("target", "host", "forwarded"),
    [
        ("http://t.local/echo/a?x=1", "t.local", "/echo/a?x=1"),
        ("http://T.LOCAL:80/echo", "t.local", "/echo"),
        ("HTTP://t.local:8080/echo?y", "t.local:8080", "/echo?y"),
    ],
)
async def test_absolute_form_with_the_same_host_goes_upstream_in_origin_form(
    upstream, gateway, target, host, forwarded
):
    gw = await gateway(upstream)
    payload = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    response = await raw_request(gw.process.state.listen, payload.encode())
    assert response.status == 200, response.raw[:300]
    echo = response.json()
    seen = {n.lower(): v for n, v in echo["headers"]}
    assert seen["host"] == host
    assert echo["path"] + ("?" + echo["query"] if echo["query"] else "") == forwarded
