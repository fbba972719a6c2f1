"""A tiny petstore service for the example (and the tests): it answers what
``openapi.yaml`` declares and remembers every request it received, so a test can tell
which requests got past the gateway.

Run it: ``python examples/petstore/upstream.py --port 3000``; then
``wardgate run --upstream http://127.0.0.1:3000 --policy examples/petstore/policy.yaml``.

``GET /pets/{petId}`` returns an ``internalNote`` the spec does not declare: with
``response.stripUndeclaredProperties`` the gateway removes it before it reaches clients."""

from __future__ import annotations

import argparse
import json

from aiohttp import web

RECEIVED = web.AppKey("received", list)
CASE_HEADER = "x-test-case"
CASES = web.AppKey("cases", set)
"""Values of the ``x-test-case`` header seen: a test tags each request to know which got
through."""


def _pet(pet_id: int) -> dict[str, object]:
    return {"id": pet_id, "name": f"pet{pet_id}", "species": "cat", "tag": None}


async def _record(request: web.Request) -> bytes:
    body = await request.read()
    request.app[RECEIVED].append((request.method, request.raw_path, body))
    if CASE_HEADER in request.headers:
        request.app[CASES].add(request.headers[CASE_HEADER])
    return body


async def list_pets(request: web.Request) -> web.Response:
    await _record(request)
    return web.json_response([_pet(1), _pet(2)])


async def create_pet(request: web.Request) -> web.Response:
    body = await _record(request)
    try:
        data = json.loads(body) if request.content_type == "application/json" else {}
    except ValueError:
        data = {}
    name = data.get("name") if isinstance(data, dict) else None
    return web.json_response({"id": 3, "name": str(name or "new")}, status=201)


async def show_pet(request: web.Request) -> web.Response:
    await _record(request)
    pet_id = int(request.match_info["petId"]) if request.match_info["petId"].isdigit() else 1
    return web.json_response({**_pet(pet_id), "internalNote": "vet bill unpaid"})


async def delete_pet(request: web.Request) -> web.Response:
    await _record(request)
    return web.Response(status=204)


async def upload_photo(request: web.Request) -> web.Response:
    await _record(request)
    return web.Response(status=204)


async def owner_pets(request: web.Request) -> web.Response:
    await _record(request)
    return web.json_response([_pet(4)])


async def anything_else(request: web.Request) -> web.Response:
    # Reached only if the gateway let an undeclared request through.
    await _record(request)
    return web.json_response({"unexpected": True}, status=418)


def petstore_app() -> web.Application:
    app = web.Application()
    app[RECEIVED] = []
    app[CASES] = set()
    base = "/api/v1"
    app.router.add_get(f"{base}/pets", list_pets, allow_head=False)
    app.router.add_post(f"{base}/pets", create_pet)
    app.router.add_get(f"{base}/pets/{{petId}}", show_pet, allow_head=False)
    app.router.add_delete(f"{base}/pets/{{petId}}", delete_pet)
    app.router.add_put(f"{base}/pets/{{petId}}/photo", upload_photo)
    app.router.add_get(f"{base}/owners/{{ownerId}}/pets", owner_pets, allow_head=False)
    app.router.add_route("*", "/{tail:.*}", anything_else)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    web.run_app(petstore_app(), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
