"""OpenAPI request validation cost: Wardgate's compiled ``openapi`` filter against
openapi-core's own request validator, on the same generated spec (120+ operations, shared
component schemas, path/query/header parameters, JSON bodies) and the same requests, in one
run on this machine.

Each side validates each request kind ``--iterations`` times per round; the per-request
median over ``--rounds`` rounds is reported, with the ratio. Both sides include building
their request object (what a gateway does per request); neither does any I/O. Both must
agree on every request's verdict, or the run fails: a fast wrong answer is not a result.

Usage: ``python bench/openapi_bench.py [--iterations N] [--rounds N] [--resources N]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "gateway"))

from multidict import CIMultiDict  # noqa: E402
from openapi_core import OpenAPI  # noqa: E402
from openapi_core.testing import MockRequest  # noqa: E402

from wardgate.config import load_policy_text  # noqa: E402
from wardgate.filters.api import HttpRequest  # noqa: E402
from wardgate.runtime import compile_policy  # noqa: E402


def generate_spec(resources: int) -> dict[str, Any]:
    """A realistic CRUD API: per resource list/create/get/update/delete (5 operations)."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {
        "Address": {
            "type": "object",
            "required": ["street", "city"],
            "properties": {
                "street": {"type": "string", "maxLength": 100},
                "city": {"type": "string", "maxLength": 50},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
        },
        "Error": {
            "type": "object",
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
        },
    }
    common = {
        "Page": {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
        "Size": {
            "name": "size",
            "in": "query",
            "schema": {"type": "integer", "minimum": 1, "maximum": 100},
        },
        "Tenant": {
            "name": "x-tenant",
            "in": "header",
            "required": True,
            "schema": {"type": "string", "minLength": 3, "maxLength": 32},
        },
    }
    ok = {"description": "ok"}
    for i in range(resources):
        name = f"Resource{i}"
        schemas[name] = {
            "type": "object",
            "required": ["name", "status"],
            "properties": {
                "id": {"type": "integer", "readOnly": True},
                "name": {"type": "string", "minLength": 1, "maxLength": 80},
                "status": {"type": "string", "enum": ["active", "inactive", "pending"]},
                "tags": {"type": "array", "maxItems": 10, "items": {"type": "string"}},
                "price": {"type": "number", "minimum": 0},
                "address": {"$ref": "#/components/schemas/Address"},
                "createdAt": {"type": "string", "format": "date-time"},
            },
        }
        ref = {"$ref": f"#/components/schemas/{name}"}
        id_param = {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
        body = {"required": True, "content": {"application/json": {"schema": ref}}}
        paths[f"/v1/resource{i}"] = {
            "get": {
                "operationId": f"list{name}",
                "parameters": [
                    {"$ref": "#/components/parameters/Page"},
                    {"$ref": "#/components/parameters/Size"},
                    {"$ref": "#/components/parameters/Tenant"},
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["active", "inactive"]},
                    },
                ],
                "responses": {"200": ok},
            },
            "post": {
                "operationId": f"create{name}",
                "parameters": [{"$ref": "#/components/parameters/Tenant"}],
                "requestBody": body,
                "responses": {"201": ok},
            },
        }
        paths[f"/v1/resource{i}/{{id}}"] = {
            "parameters": [id_param, {"$ref": "#/components/parameters/Tenant"}],
            "get": {"operationId": f"get{name}", "responses": {"200": ok}},
            "put": {"operationId": f"update{name}", "requestBody": body, "responses": {"200": ok}},
            "delete": {"operationId": f"delete{name}", "responses": {"204": ok}},
        }
    return {
        "openapi": "3.0.3",
        "info": {"title": "bench", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas, "parameters": common},
    }


GOOD_BODY = json.dumps(
    {
        "name": "Widget",
        "status": "active",
        "tags": ["a", "b", "c"],
        "price": 12.5,
        "address": {"street": "Main St 1", "city": "Zurich", "zip": "80001"},
        "createdAt": "2024-01-02T03:04:05Z",
    }
).encode()
BAD_BODY = json.dumps({"name": "", "status": "gone", "address": {"city": 5}}).encode()


def requests_for(resources: int) -> list[tuple[str, str, str, str, bytes, bool]]:
    """(label, method, path, query, body, expected valid) - spread over the API."""
    last = resources - 1
    mid = resources // 2
    return [
        (
            "GET list (query)",
            "GET",
            f"/v1/resource{last}",
            "page=2&size=50&status=active",
            b"",
            True,
        ),
        ("GET item (path)", "GET", f"/v1/resource{mid}/42", "", b"", True),
        ("POST JSON body", "POST", f"/v1/resource{last}", "", GOOD_BODY, True),
        ("PUT JSON body", "PUT", f"/v1/resource{mid}/7", "", GOOD_BODY, True),
        ("POST invalid body", "POST", f"/v1/resource{mid}", "", BAD_BODY, False),
        ("GET invalid query", "GET", f"/v1/resource{mid}", "size=1000", b"", False),
    ]


def wardgate_validator(spec: dict[str, Any]) -> Callable[[str, str, str, bytes], bool]:
    policy = compile_policy(
        load_policy_text(json.dumps({"openapi": {"inline": spec, "maxBodyBytes": 65536}}))
    )
    config = next(f for f in policy.filters if f.name == "openapi")

    def run(coro: Any) -> Any:
        # The filter's phases never await I/O: drive the coroutine without an event loop.
        try:
            coro.send(None)
        except StopIteration as stop:
            return stop.value
        raise RuntimeError("the filter suspended")

    def validate(method: str, path: str, query: str, body: bytes) -> bool:
        headers = CIMultiDict({"x-tenant": "acme"})
        if body:
            headers["content-type"] = "application/json"
            headers["content-length"] = str(len(body))
        request = HttpRequest(method, f"{path}?{query}" if query else path, path, query, headers)
        flt = config.create_filter()
        if run(flt.decode_headers(request)) is not None:
            return False
        return run(flt.decode_body(request, body, True)) is None

    return validate


def openapi_core_validator(spec: dict[str, Any]) -> Callable[[str, str, str, bytes], bool]:
    api = OpenAPI.from_dict(spec)

    def validate(method: str, path: str, query: str, body: bytes) -> bool:
        args = [tuple(pair.split("=", 1)) for pair in query.split("&")] if query else None
        request = MockRequest(
            "http://localhost",
            method.lower(),
            path,
            args=args,
            headers={"x-tenant": "acme"},
            data=body or None,
            content_type="application/json",
        )
        try:
            api.validate_request(request)
        except Exception:
            return False
        return True

    return validate


def per_request_us(
    validate: Callable[[str, str, str, bytes], bool], case: tuple[Any, ...], iterations: int
) -> float:
    _, method, path, query, body, _ = case
    started = time.perf_counter()
    for _ in range(iterations):
        validate(method, path, query, body)
    return (time.perf_counter() - started) / iterations * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resources", type=int, default=25, help="5 operations each")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--no-scale",
        dest="scale",
        action="store_false",
        help="skip the 10x larger spec (routing cost vs number of operations)",
    )
    args = parser.parse_args()
    spec = generate_spec(args.resources)
    operations = sum(1 for item in spec["paths"].values() for key in item if key != "parameters")
    started = time.perf_counter()
    wardgate = wardgate_validator(spec)
    compile_s = time.perf_counter() - started
    started = time.perf_counter()
    reference = openapi_core_validator(spec)
    reference_s = time.perf_counter() - started
    cases = requests_for(args.resources)
    for case in cases:
        label, method, path, query, body, expected = case
        got = (wardgate(method, path, query, body), reference(method, path, query, body))
        if got != (expected, expected):
            print(f"verdicts disagree for {label}: wardgate/openapi-core = {got}, want {expected}")
            return 1
    print(
        f"spec: {operations} operations, {len(spec['components']['schemas'])} schemas; "
        f"setup: wardgate compile {compile_s * 1000:.0f} ms, openapi-core load "
        f"{reference_s * 1000:.0f} ms"
    )
    print(f"{'request':22} {'wardgate us':>12} {'openapi-core us':>16} {'speed-up':>9}")
    ratios = []
    for case in cases:
        ours = statistics.median(
            per_request_us(wardgate, case, args.iterations) for _ in range(args.rounds)
        )
        theirs = statistics.median(
            per_request_us(reference, case, max(args.iterations // 10, 10))
            for _ in range(args.rounds)
        )
        ratios.append(theirs / ours)
        print(f"{case[0]:22} {ours:12.1f} {theirs:16.1f} {theirs / ours:8.1f}x")
    print(
        f"median speed-up over openapi-core: {statistics.median(ratios):.1f}x "
        f"(target >= 10x); min {min(ratios):.1f}x"
    )
    if args.scale:
        # Routing cost must not grow with the number of operations (trie, not a scan).
        big_resources = args.resources * 10
        big = wardgate_validator(generate_spec(big_resources))
        small_case = requests_for(args.resources)[1]
        big_case = requests_for(big_resources)[1]
        small_us = statistics.median(
            per_request_us(wardgate, small_case, args.iterations) for _ in range(args.rounds)
        )
        big_us = statistics.median(
            per_request_us(big, big_case, args.iterations) for _ in range(args.rounds)
        )
        print(
            f"GET item with {args.resources * 5} vs {big_resources * 5} operations: "
            f"{small_us:.1f} us vs {big_us:.1f} us (ratio {big_us / small_us:.2f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
