"""Parameter deserialisation per location, style and explode (the OpenAPI 3 "Style
Values" table), shown through ``const`` schemas: the request passes only when the value
was decoded to exactly the expected JSON value."""

from __future__ import annotations

from typing import Any

import pytest

from tests.filters.openapi.helpers import decide, locations, minimal_spec, policy_for

ARRAY = [3, 4, 5]
OBJECT = {"role": "admin", "id": 5}
ARRAY_SCHEMA = {"type": "array", "items": {"type": "integer"}, "const": ARRAY}
OBJECT_SCHEMA = {
    "type": "object",
    "properties": {"role": {"type": "string"}, "id": {"type": "integer"}},
    "const": OBJECT,
}
INT_SCHEMA = {"type": "integer", "const": 5}

# (location, style, explode, schema, how the request carries it)
CASES: list[tuple[str, str, bool, dict[str, Any], str]] = [
    ("path", "simple", False, INT_SCHEMA, "5"),
    ("path", "simple", False, ARRAY_SCHEMA, "3,4,5"),
    ("path", "simple", True, ARRAY_SCHEMA, "3,4,5"),
    ("path", "simple", False, OBJECT_SCHEMA, "role,admin,id,5"),
    ("path", "simple", True, OBJECT_SCHEMA, "role=admin,id=5"),
    ("path", "label", False, INT_SCHEMA, ".5"),
    ("path", "label", False, ARRAY_SCHEMA, ".3,4,5"),
    ("path", "label", True, ARRAY_SCHEMA, ".3.4.5"),
    ("path", "label", False, OBJECT_SCHEMA, ".role,admin,id,5"),
    ("path", "label", True, OBJECT_SCHEMA, ".role=admin.id=5"),
    ("path", "matrix", False, INT_SCHEMA, ";x=5"),
    ("path", "matrix", False, ARRAY_SCHEMA, ";x=3,4,5"),
    ("path", "matrix", True, ARRAY_SCHEMA, ";x=3;x=4;x=5"),
    ("path", "matrix", False, OBJECT_SCHEMA, ";x=role,admin,id,5"),
    ("path", "matrix", True, OBJECT_SCHEMA, ";role=admin;id=5"),
    ("query", "form", True, INT_SCHEMA, "x=5"),
    ("query", "form", True, ARRAY_SCHEMA, "x=3&x=4&x=5"),
    ("query", "form", False, ARRAY_SCHEMA, "x=3,4,5"),
    ("query", "form", True, OBJECT_SCHEMA, "role=admin&id=5"),
    ("query", "form", False, OBJECT_SCHEMA, "x=role,admin,id,5"),
    ("query", "spaceDelimited", False, ARRAY_SCHEMA, "x=3%204%205"),
    ("query", "pipeDelimited", False, ARRAY_SCHEMA, "x=3|4|5"),
    ("query", "deepObject", True, OBJECT_SCHEMA, "x[role]=admin&x[id]=5"),
    ("header", "simple", False, INT_SCHEMA, "5"),
    ("header", "simple", False, ARRAY_SCHEMA, "3,4,5"),
    ("header", "simple", False, OBJECT_SCHEMA, "role,admin,id,5"),
    ("header", "simple", True, OBJECT_SCHEMA, "role=admin,id=5"),
    ("cookie", "form", True, INT_SCHEMA, "x=5"),
    ("cookie", "form", False, ARRAY_SCHEMA, "x=3,4,5"),
]


def _policy(location: str, style: str, explode: bool, schema: dict[str, Any]):
    param = {
        "name": "x",
        "in": location,
        "required": True,
        "style": style,
        "explode": explode,
        "schema": schema,
    }
    path = "/p/{x}" if location == "path" else "/p"
    spec = minimal_spec(  # 3.1: const is a JSON Schema 2020-12 keyword
        {path: {"get": {"parameters": [param], "responses": {"200": {"description": "ok"}}}}},
        "3.1.0",
    )
    return policy_for(spec)


def _request(location: str, carried: str) -> tuple[str, dict[str, str]]:
    if location == "path":
        return f"/p/{carried}", {}
    if location == "query":
        return f"/p?{carried}", {}
    if location == "header":
        return "/p", {"x": carried}
    return "/p", {"cookie": carried}


def _wrong(carried: str) -> str:
    """The same serialisation with one value changed (5 -> 6, admin -> guest)."""
    return carried.replace("5", "6").replace("admin", "guest")


@pytest.mark.parametrize(("location", "style", "explode", "schema", "carried"), CASES)
async def test_style_decodes_to_the_declared_value(location, style, explode, schema, carried):
    policy = _policy(location, style, explode, schema)
    target, headers = _request(location, carried)
    result = await decide(policy, "GET", target, headers)
    assert result["decision"] == "allow", result
    target, headers = _request(location, _wrong(carried))
    refused = await decide(policy, "GET", target, headers)
    assert refused["decision"] == "deny"
    assert locations(refused) == [f"{location}:x"]


async def test_required_parameters_must_be_present():
    for location in ("query", "header", "cookie"):
        policy = _policy(
            location, {"query": "form", "header": "simple"}.get(location, "form"), False, INT_SCHEMA
        )
        result = await decide(policy, "GET", "/p")
        assert (result["status"], locations(result)) == (400, [f"{location}:x"])
        assert result["violations"][0]["ruleId"] == "openapi.parameter.required"


async def test_a_scalar_query_parameter_given_twice_is_refused():
    # HTTP parameter pollution: upstream frameworks disagree on first vs last.
    policy = _policy("query", "form", True, {"type": "integer"})
    result = await decide(policy, "GET", "/p?x=1&x=2")
    assert locations(result) == ["query:x"]


async def test_json_content_parameter():
    param = {
        "name": "q",
        "in": "query",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["a"],
                    "properties": {"a": {"type": "integer"}},
                }
            }
        },
    }
    policy = policy_for(
        minimal_spec(
            {"/p": {"get": {"parameters": [param], "responses": {"200": {"description": "ok"}}}}},
            "3.1.0",
        )
    )
    assert (await decide(policy, "GET", "/p?q=%7B%22a%22%3A1%7D"))["decision"] == "allow"
    assert locations(await decide(policy, "GET", "/p?q=%7B%22a%22%3A%22x%22%7D")) == ["query:q"]
    assert locations(await decide(policy, "GET", "/p?q=%7Bnot-json")) == ["query:q"]


async def test_header_parameters_are_case_insensitive_and_authorization_is_not_one():
    params = [
        {"name": "X-Trace", "in": "header", "required": True, "schema": {"type": "integer"}},
        {"name": "Authorization", "in": "header", "required": True, "schema": {"type": "integer"}},
    ]
    policy = policy_for(
        minimal_spec(
            {"/p": {"get": {"parameters": params, "responses": {"200": {"description": "ok"}}}}},
            "3.1.0",
        )
    )
    assert (await decide(policy, "GET", "/p", {"x-trace": "7"}))["decision"] == "allow"


async def test_path_templates_with_several_parameters_in_one_segment():
    params = [
        {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": "^[a-z]+$"},
        },
        {
            "name": "ext",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": ["json", "xml"]},
        },
    ]
    spec = minimal_spec(
        {
            "/files/{name}.{ext}": {
                "get": {"parameters": params, "responses": {"200": {"description": "ok"}}}
            }
        },
        "3.1.0",
    )
    policy = policy_for(spec)
    assert (await decide(policy, "GET", "/files/report.json"))["decision"] == "allow"
    assert locations(await decide(policy, "GET", "/files/report.csv")) == ["path:ext"]
    assert (await decide(policy, "GET", "/files/report"))["status"] == 404


async def test_percent_encoded_path_values_are_decoded_before_validation():
    param = {
        "name": "n",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "const": "a b"},
    }
    policy = policy_for(
        minimal_spec(
            {
                "/p/{n}": {
                    "get": {"parameters": [param], "responses": {"200": {"description": "ok"}}}
                }
            },
            "3.1.0",
        )
    )
    assert (await decide(policy, "GET", "/p/a%20b"))["decision"] == "allow"
