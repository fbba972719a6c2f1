"""The response side of the WAF in a real ``wardgate run`` process, in front of a real
upstream that leaks: leaking text responses become a generic 502 (or are only logged in
detect mode), other content types stream untouched, security headers are set and the
upstream's stack-naming headers removed."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

PY_TRACE = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/views.py", line 42, in get_user\n'
    "    row = cursor.fetchone()\n"
    "KeyError: 'id'\n"
)
JAVA_TRACE = {
    "error": "java.lang.NullPointerException",
    "trace": "java.lang.NullPointerException\n\tat com.acme.shop.OrderService.load"
    "(OrderService.java:118)\n\tat com.acme.shop.OrderController.get(OrderController.java:40)",
}
LEAKS: dict[str, tuple[int, str, str]] = {
    "/sql": (
        500,
        "text/html",
        "<p>You have an error in your SQL syntax; check the manual that corresponds to your "
        "MySQL server version for the right syntax to use near ''1'' at line 1</p>",
    ),
    "/python": (500, "text/plain; charset=utf-8", PY_TRACE),
    "/java": (500, "application/json", json.dumps(JAVA_TRACE)),
    "/php": (
        200,
        "text/html",
        "<br />\n<b>Fatal error</b>:  Uncaught Error: Call to undefined function db() in "
        "/var/www/html/index.php:12\nStack trace:\n#0 {main}\n  thrown in "
        "<b>/var/www/html/index.php</b> on line <b>12</b><br />",
    ),
    "/dotnet": (
        500,
        "text/html",
        "<title>Runtime Error</title><h1>Server Error in '/' Application.</h1>"
        "System.InvalidOperationException: Sequence contains no elements",
    ),
    "/node": (
        500,
        "text/html; charset=utf-8",
        "<pre>TypeError: Cannot read properties of undefined (reading 'id')<br> &nbsp; "
        "&nbsp;at getUser (/usr/src/app/routes/users.js:17:22)<br></pre>",
    ),
    "/listing": (
        200,
        "text/html",
        "<html><head><title>Index of /backup</title></head><body><h1>Index of /backup</h1>"
        '<a href="db.sql">db.sql</a></body></html>',
    ),
}
OK_BODY = json.dumps({"items": [{"id": 1, "note": "An error occurred? No, all fine."}]})


@pytest.fixture
async def leaky_upstream() -> AsyncIterator[tuple[str, asyncio.Event]]:
    release = asyncio.Event()

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        stack = {"Server": "gunicorn/21.2.0", "X-Powered-By": "PHP/8.1.2"}
        path = request.path
        if path in LEAKS:
            status, ctype, text = LEAKS[path]
            return web.Response(status=status, text=text, headers={**stack, "Content-Type": ctype})
        if path == "/binary":  # a download that happens to contain a trace: not inspected
            body = b"\x89PNG\r\n" + PY_TRACE.encode() * 3
            return web.Response(body=body, headers={**stack, "Content-Type": "image/png"})
        if path == "/gzip":
            return web.Response(
                body=gzip.compress(PY_TRACE.encode()),
                headers={**stack, "Content-Type": "text/plain", "Content-Encoding": "gzip"},
            )
        if path == "/big":  # the trace is past maxInspectBytes: streamed, not inspected
            body = b"x" * 70000 + PY_TRACE.encode()
            return web.Response(body=body, headers={"Content-Type": "text/plain"})
        if path == "/events":
            out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await out.prepare(request)
            await out.write(b"data: first\n\n")
            await asyncio.wait_for(release.wait(), 30)
            await out.write(b"data: second\n\n")
            await out.write_eof()
            return out
        return web.Response(text=OK_BODY, headers={**stack, "Content-Type": "application/json"})

    runner = web.ServerRunner(web.Server(handler))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", release
    await runner.cleanup()


def _start(gateway_process: Any, tmp_path: Path, upstream: str, policy: str) -> Any:
    path = tmp_path / "policy.yaml"
    path.write_text(policy)
    return gateway_process("--upstream", upstream, "--policy", str(path))


async def test_leaks_become_a_generic_502_and_headers_are_hardened(
    leaky_upstream, gateway_process, tmp_path
):
    upstream, release = leaky_upstream
    gw = _start(gateway_process, tmp_path, upstream, "")  # the defaults
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        for path, (_status, _ctype, text) in LEAKS.items():
            async with http.get(gw.url + path) as resp:
                body = await resp.read()
                assert resp.status == 502, path
                problem = json.loads(body)
                assert problem["title"] == "Bad Gateway" and problem["requestId"]
                # Nothing of the upstream's answer, and no hint which rule fired.
                assert "violations" not in problem and "leak" not in body.decode()
                assert text[:20].encode() not in body
                assert resp.headers["x-content-type-options"] == "nosniff"
                assert "x-powered-by" not in resp.headers
        async with http.get(gw.url + "/gzip") as resp:
            assert resp.status == 502  # inspected decompressed
        async with http.get(gw.url + "/items") as resp:
            assert resp.status == 200
            assert await resp.read() == OK_BODY.encode()
            assert resp.headers["x-content-type-options"] == "nosniff"
            assert resp.headers["server"] == "wardgate"  # not gunicorn/21.2.0
            assert "x-powered-by" not in resp.headers
            assert "strict-transport-security" not in resp.headers  # not configured
        async with http.get(gw.url + "/binary") as resp:
            assert resp.status == 200
            assert await resp.read() == b"\x89PNG\r\n" + PY_TRACE.encode() * 3
        async with http.get(gw.url + "/big") as resp:
            assert resp.status == 200
            assert await resp.read() == b"x" * 70000 + PY_TRACE.encode()
        async with http.get(gw.url + "/events") as resp:
            assert resp.status == 200
            # The first event arrives while the upstream still holds the stream open:
            # event streams are never buffered.
            first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 20)
            assert first == b"data: first\n\n"
            release.set()
            assert await resp.read() == b"data: second\n\n"
    records = await _wait_access(gw, 502, len(LEAKS) + 1)
    assert {r["wardgate"]["replied_by"] for r in records} == {"response_waf"}
    assert {r["wardgate"]["reason"] for r in records} == {"upstream_leak"}
    assert {rule for r in records for rule in r["wardgate"]["rule_ids"]} == {
        "response_waf.leak.sql.mysql",
        "response_waf.leak.trace.python",
        "response_waf.leak.trace.java",
        "response_waf.leak.trace.php",
        "response_waf.leak.trace.dotnet",
        "response_waf.leak.trace.node",
        "response_waf.leak.listing",
    }


async def test_detect_mode_logs_and_lets_through(leaky_upstream, gateway_process, tmp_path):
    upstream, _ = leaky_upstream
    policy = (
        "waf:\n  response:\n    mode: detect\n    securityHeaders:\n"
        "      strictTransportSecurity: 'max-age=31536000; includeSubDomains'\n"
        "      removeServerHeaders: false\n      contentTypeOptions: false\n"
    )
    gw = _start(gateway_process, tmp_path, upstream, policy)
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/python") as resp:
            assert resp.status == 500
            assert await resp.text() == PY_TRACE
            assert resp.headers["strict-transport-security"] == (
                "max-age=31536000; includeSubDomains"
            )
            assert resp.headers["server"] == "gunicorn/21.2.0"
            assert resp.headers["x-powered-by"] == "PHP/8.1.2"
            assert "x-content-type-options" not in resp.headers
    found = await _wait_access(gw, 500, 1)
    assert found[0]["wardgate"]["detected"] == ["response_waf.leak.trace.python@response:body"]


def _access(gw: Any, status: int) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in list(gw.stdout_lines) if line.startswith("{")]
    return [r for r in lines if r.get("http.response.status_code") == status]


async def _wait_access(gw: Any, status: int, count: int) -> list[dict[str, Any]]:
    """The access records with ``status``, once ``count`` of them are written."""
    deadline = time.monotonic() + 20
    while ((found := _access(gw, status)) and len(found) < count) or not found:
        if time.monotonic() > deadline:
            raise AssertionError("\n".join(gw.stdout_lines))
        await asyncio.sleep(0.1)
    return found


async def test_upstream_reset_while_inspecting_is_a_503(gateway):
    """A text body is read before the status line goes out, so an upstream that dies in it
    is still an honest 503 (UC), not a truncated 200."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1000\r\n\r\n<p>"
        )
        await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        gw = await gateway(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        async with aiohttp.ClientSession() as http, http.get(gw.url + "/x") as resp:
            assert resp.status == 503
    assert gw.access_records()[-1]["wardgate"]["response_flags"] == "UC"


async def test_openapi_and_response_waf_each_see_their_own_limit(gateway, leaky_upstream):
    """With two filters reading response bodies, each sees at most the prefix it asked for
    (and a cut body as cut): the larger limit of one never widens the other's."""
    upstream, _ = leaky_upstream
    spec = {
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/items": {
                "get": {
                    "responses": {"200": {"description": "ok", "content": {"application/json": {}}}}
                }
            }
        },
    }
    section = {
        "inline": spec,
        "security": "ignore",
        "response": {"mode": "enforce", "maxBodyBytes": 8},
    }
    gw = await gateway(upstream, json.dumps({"openapi": section}))
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/items") as resp:
        assert resp.status == 502
        problem = await resp.json(content_type=None)
    assert problem["filter"] == "openapi"
    assert problem["violations"][0]["ruleId"] == "openapi.response.size"
