"""The openapi filter inside the real gateway (in-process, real sockets): what the
upstream receives, refusals on the wire, response checking and stripping."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from tests.filters.openapi.helpers import PETSTORE, ROOT


def _load_upstream_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "petstore_upstream", ROOT / "examples/petstore/upstream.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PETSTORE_UPSTREAM = _load_upstream_module()


@pytest.fixture
async def petstore_upstream() -> AsyncIterator[tuple[str, list[Any]]]:
    app = PETSTORE_UPSTREAM.petstore_app()
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", app[PETSTORE_UPSTREAM.RECEIVED]
    await runner.cleanup()


def policy_yaml(**options: Any) -> str:
    section = {"specFile": str(PETSTORE), "security": "ignore", **options}
    return yaml.safe_dump({"openapi": section})


async def test_conforming_requests_reach_the_upstream_unchanged(gateway, petstore_upstream):
    url, received = petstore_upstream
    gw = await gateway(url, policy_yaml())
    body = b'{"name":"Rex","species":"dog"}'
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{gw.url}/api/v1/pets", data=body, headers={"content-type": "application/json"}
        ) as resp:
            assert resp.status == 201
        async with session.get(f"{gw.url}/api/v1/pets?limit=3&tags=a,b") as resp:
            assert resp.status == 200
    assert received == [
        ("POST", "/api/v1/pets", body),
        ("GET", "/api/v1/pets?limit=3&tags=a,b", b""),
    ]


async def test_refused_requests_never_reach_the_upstream(gateway, petstore_upstream):
    url, received = petstore_upstream
    gw = await gateway(url, policy_yaml())
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gw.url}/api/v1/admin") as resp:
            assert resp.status == 404
            assert resp.headers["content-type"] == "application/problem+json"
            problem = await resp.json(content_type=None)
            assert problem["filter"] == "openapi" and problem["status"] == 404
        async with session.patch(f"{gw.url}/api/v1/pets/1") as resp:
            assert resp.status == 405
            assert resp.headers["allow"] == "GET, DELETE"
        async with session.get(f"{gw.url}/api/v1/pets?limit=1000") as resp:
            assert resp.status == 400
            problem = await resp.json(content_type=None)
            assert [v["location"] for v in problem["violations"]] == ["query:limit"]
            assert "1000" not in json.dumps(problem)
        async with session.post(
            f"{gw.url}/api/v1/pets", data=b"<x/>", headers={"content-type": "application/xml"}
        ) as resp:
            assert resp.status == 415
        # No body at all on an operation whose body is required: refused too.
        async with session.post(f"{gw.url}/api/v1/pets") as resp:
            assert resp.status == 400
            problem = await resp.json(content_type=None)
            assert problem["violations"][0]["location"] == "body"
        async with session.post(
            f"{gw.url}/api/v1/pets",
            data=b'{"name": 5}',
            headers={"content-type": "application/json"},
        ) as resp:
            assert resp.status == 400
    assert received == []
    records = gw.access_records()
    assert [r["http.response.status_code"] for r in records] == [404, 405, 400, 415, 400, 400]


async def test_chunked_bodies_are_checked_too(gateway, petstore_upstream):
    url, received = petstore_upstream
    gw = await gateway(url, policy_yaml())

    async def chunks(data: bytes):
        yield data[:5]
        yield data[5:]

    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{gw.url}/api/v1/pets",
            data=chunks(b'{"name": ""}'),
            headers={"content-type": "application/json"},
        ) as resp:
            assert resp.status == 400
        async with session.post(
            f"{gw.url}/api/v1/pets",
            data=chunks(b'{"name": "Tom"}'),
            headers={"content-type": "application/json"},
        ) as resp:
            assert resp.status == 201
    assert [r[2] for r in received] == [b'{"name": "Tom"}']


async def test_detect_mode_forwards_and_logs_findings(gateway, petstore_upstream):
    url, received = petstore_upstream
    gw = await gateway(url, policy_yaml(mode="detect"))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gw.url}/api/v1/pets?limit=0") as resp:
            assert resp.status == 200
    assert len(received) == 1
    record = gw.access_records()[-1]
    assert record["wardgate"]["detected"] == ["openapi.schema.minimum@query:limit"]


async def test_undeclared_response_properties_are_stripped(gateway, petstore_upstream):
    url, _ = petstore_upstream
    gw = await gateway(url, policy_yaml(response={"stripUndeclaredProperties": True}))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gw.url}/api/v1/pets/7") as resp:
            assert resp.status == 200
            raw = await resp.read()
            assert int(resp.headers["content-length"]) == len(raw)
    pet = json.loads(raw)
    assert pet == {"id": 7, "name": "pet7", "species": "cat", "tag": None}


async def test_response_enforce_replaces_undeclared_answers_with_502(gateway, petstore_upstream):
    url, _ = petstore_upstream
    spec = yaml.safe_load(PETSTORE.read_text())
    # The upstream answers this path with 418, which the spec does not declare.
    spec["paths"]["/teapot"] = {"get": {"responses": {"200": {"description": "ok"}}}}
    policy = yaml.safe_dump(
        {"openapi": {"inline": spec, "security": "ignore", "response": {"mode": "enforce"}}}
    )
    gw = await gateway(url, policy)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gw.url}/api/v1/teapot") as resp:
            assert resp.status == 502
            problem = await resp.json(content_type=None)
            assert problem["reason"] == "response_invalid"
            assert problem["violations"][0]["location"] == "response:status"
        async with session.get(f"{gw.url}/api/v1/pets/7") as resp:
            assert resp.status == 200  # declared status, body matches (extra fields allowed)


async def test_response_body_schema_violation_in_detect_mode_passes_and_is_logged(
    gateway, petstore_upstream
):
    url, _ = petstore_upstream
    spec = yaml.safe_load(PETSTORE.read_text())
    spec["components"]["schemas"]["Pet"]["allOf"][1]["properties"]["id"]["maximum"] = 5
    policy = yaml.safe_dump(
        {"openapi": {"inline": spec, "security": "ignore", "response": {"mode": "detect"}}}
    )
    gw = await gateway(url, policy)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gw.url}/api/v1/pets/7") as resp:
            assert resp.status == 200
    assert gw.access_records()[-1]["wardgate"]["detected"] == [
        "openapi.schema.maximum@response:body:$.id"
    ]


async def test_response_content_type_and_size_in_enforce_mode(gateway, petstore_upstream):
    url, _ = petstore_upstream
    spec = yaml.safe_load(PETSTORE.read_text())
    spec["paths"]["/pets"]["get"]["responses"]["200"]["content"] = {"application/xml": {}}
    section = {
        "inline": spec,
        "security": "ignore",
        "response": {"mode": "enforce", "maxBodyBytes": 16},
    }
    gw = await gateway(url, yaml.safe_dump({"openapi": section}))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gw.url}/api/v1/pets") as resp:
            assert resp.status == 502
            problem = await resp.json(content_type=None)
            assert problem["violations"][0]["location"] == "response:header:content-type"
        async with session.get(f"{gw.url}/api/v1/pets/3") as resp:
            assert resp.status == 502  # a body longer than maxBodyBytes cannot be checked
            problem = await resp.json(content_type=None)
            assert problem["violations"][0]["ruleId"] == "openapi.response.size"
