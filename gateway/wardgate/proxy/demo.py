"""The built-in demo upstream (``wardgate demo``): a tiny HTTP service to put the gateway in
front of, with endpoints that show what reaches the upstream."""

from __future__ import annotations

import asyncio
import hashlib
import json

from aiohttp import web

CHUNK = 64 * 1024


async def _index(_: web.Request) -> web.Response:
    return web.json_response(
        {
            "service": "wardgate demo upstream",
            "endpoints": [
                "/echo (any method: what the upstream received)",
                "/bytes/{n} (n bytes, streamed)",
                "/upload (POST: length and sha256 of the body)",
                "/status/{code}",
                "/delay/{seconds}",
            ],
        }
    )


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path": request.raw_path.partition("?")[0],
            "query": request.raw_path.partition("?")[2],
            "headers": [[k, v] for k, v in request.headers.items()],
            "bodyLength": len(body),
            "bodySha256": hashlib.sha256(body).hexdigest(),
        }
    )


def pattern_bytes(offset: int, size: int) -> bytes:
    """Deterministic, position-dependent bytes (so a lost or reordered chunk is detected)."""
    return bytes((offset + i) * 7 % 251 for i in range(size))


_BLOCK = pattern_bytes(0, 251 * 261)  # a multiple of 251: blocks repeat the same pattern


async def _bytes(request: web.Request) -> web.StreamResponse:
    total = int(request.match_info["n"])
    response = web.StreamResponse()
    response.content_length = total
    response.content_type = "application/octet-stream"
    await response.prepare(request)
    sent = 0 if request.method != "HEAD" else total
    while sent < total:
        piece = _BLOCK[: min(len(_BLOCK), total - sent)]
        await response.write(piece)
        sent += len(piece)
    await response.write_eof()
    return response


async def _upload(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return web.json_response(
        {
            "length": size,
            "sha256": digest.hexdigest(),
            "contentLength": request.headers.get("content-length"),
            "transferEncoding": request.headers.get("transfer-encoding"),
        }
    )


async def _status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    return web.Response(
        status=code, text=json.dumps({"status": code}), content_type="application/json"
    )


async def _delay(request: web.Request) -> web.Response:
    await asyncio.sleep(min(float(request.match_info["seconds"]), 60.0))
    return web.json_response({"delayed": float(request.match_info["seconds"])})


def demo_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app.router.add_get("/", _index)
    app.router.add_route("*", "/echo{tail:.*}", _echo)
    app.router.add_get(r"/bytes/{n:\d+}", _bytes)
    app.router.add_post("/upload", _upload)
    app.router.add_put("/upload", _upload)
    app.router.add_route("*", r"/status/{code:\d{3}}", _status)
    app.router.add_get(r"/delay/{seconds:[0-9.]+}", _delay)
    return app


async def start_demo_upstream(host: str = "127.0.0.1", port: int = 0) -> tuple[web.AppRunner, int]:
    """Start the demo upstream; returns its runner and bound port."""
    runner = web.AppRunner(demo_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, runner.addresses[0][1]
