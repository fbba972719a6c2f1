"""Loading specs: files and $refs across files, cycles, huge specs, and every kind of bad
spec refused with a clear message (never a traceback)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_wardgate
from tests.filters.openapi.helpers import decide, locations, minimal_spec, policy_for
from wardgate.config import PolicyError
from wardgate.runtime.compiled import PolicyCompileError
from wardgate.runtime.loading import load_compiled

OK = {"200": {"description": "ok"}}


def _write(directory: Path, name: str, data: object) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data) if name.endswith(".yaml") else json.dumps(data))
    return path


def _problems(spec: object) -> str:
    with pytest.raises(PolicyCompileError) as info:
        policy_for(spec)  # type: ignore[arg-type]
    return "\n".join(info.value.problems)


async def test_refs_to_other_files_resolve_relative_to_the_spec(tmp_path):
    _write(
        tmp_path / "specs",
        "schemas/pet.yaml",
        {
            "Pet": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "owner": {"$ref": "#/Owner"}},
            },
            "Owner": {"type": "object", "properties": {"age": {"type": "integer"}}},
        },
    )
    _write(
        tmp_path / "specs",
        "params.json",
        {"Limit": {"name": "limit", "in": "query", "schema": {"type": "integer"}}},
    )
    spec = minimal_spec(
        {
            "/pets": {
                "post": {
                    "parameters": [{"$ref": "params.json#/Limit"}],
                    "requestBody": {
                        "content": {
                            "application/json": {"schema": {"$ref": "schemas/pet.yaml#/Pet"}}
                        }
                    },
                    "responses": OK,
                }
            }
        }
    )
    _write(tmp_path / "specs", "openapi.yaml", spec)
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("openapi:\n  specFile: specs/openapi.yaml\n")
    policy = load_compiled(policy_file)
    headers = {"content-type": "application/json"}
    good = await decide(policy, "POST", "/pets?limit=3", headers, b'{"name":"a","owner":{"age":3}}')
    assert good["decision"] == "allow"
    bad = await decide(policy, "POST", "/pets?limit=x", headers, b'{"owner":{"age":"x"}}')
    assert sorted(locations(bad)) == ["query:limit"]
    bad = await decide(policy, "POST", "/pets", headers, b'{"owner":{"age":"x"}}')
    assert sorted(locations(bad)) == ["body:$", "body:$.owner.age"]
    # Every file read is part of the digest: editing a referenced file is a new policy.
    before = policy.digest
    _write(
        tmp_path / "specs",
        "params.json",
        {"Limit": {"name": "limit", "in": "query", "schema": {"type": "string"}}},
    )
    assert load_compiled(policy_file).digest != before
    assert {Path(p).name for p, _ in policy.sources} == {"openapi.yaml", "pet.yaml", "params.json"}


def test_relative_spec_file_resolves_against_the_policy_directory_from_any_cwd(tmp_path):
    _write(tmp_path, "api/openapi.json", minimal_spec({"/a": {"get": {"responses": OK}}}))
    (tmp_path / "api" / "policy.yaml").write_text("openapi:\n  specFile: openapi.json\n")
    result = run_wardgate("validate", str(tmp_path / "api" / "policy.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "filters: limits, openapi" in result.stdout


async def test_recursive_schemas_are_references_not_expansions():
    spec = minimal_spec(
        {
            "/tree": {
                "post": {
                    "requestBody": {
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Node"}}
                        }
                    },
                    "responses": OK,
                }
            }
        },
        components={
            "schemas": {
                "Node": {
                    "type": "object",
                    "properties": {
                        "value": {"type": "integer"},
                        "children": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/Node"},
                        },
                    },
                }
            }
        },
    )
    policy = policy_for(spec)
    headers = {"content-type": "application/json"}
    deep = {"value": 1, "children": [{"value": 2, "children": [{"value": 3}]}]}
    assert (await decide(policy, "POST", "/tree", headers, json.dumps(deep).encode()))[
        "decision"
    ] == "allow"
    deep["children"][0]["children"][0]["value"] = "x"  # type: ignore[index]
    result = await decide(policy, "POST", "/tree", headers, json.dumps(deep).encode())
    assert locations(result) == ["body:$.children[0].children[0].value"]


def test_a_ref_cycle_without_a_schema_in_between_is_refused():
    spec = minimal_spec(
        {"/a": {"get": {"parameters": [{"$ref": "#/components/parameters/A"}], "responses": OK}}},
        components={
            "parameters": {
                "A": {"$ref": "#/components/parameters/B"},
                "B": {"$ref": "#/components/parameters/A"},
            }
        },
    )
    assert "$ref cycle through #/components/parameters/A" in _problems(spec)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"swagger": "2.0", "info": {"title": "t", "version": "1"}, "paths": {}},
            "Swagger 2.0 is not supported",
        ),
        ({"openapi": "4.0.0", "paths": {}}, "OpenAPI 4.0.0 is not supported"),
        ({"info": {"title": "t"}}, "'openapi' version field is missing"),
        ({"openapi": "3.0.3", "paths": {}}, "invalid OpenAPI 3.0 document"),
        (minimal_spec({"pets": {}}), "invalid OpenAPI 3.0 document"),
        (
            minimal_spec({"/a": {"get": {"responses": OK, "parameters": [{"$ref": "#/nowhere"}]}}}),
            "$ref #/nowhere: points at nothing",
        ),
        (
            minimal_spec({"/a/{id}": {"get": {"responses": OK}}}),
            "Path parameter 'id' for 'get' operation in '/a/{id}' was not resolved",
        ),
        (
            minimal_spec({"/a": {"get": {"responses": OK, "security": [{"nope": []}]}}}),
            "unknown security scheme 'nope'",
        ),
        (
            minimal_spec(
                {
                    "/a": {
                        "get": {
                            "parameters": [
                                {
                                    "name": "q",
                                    "in": "query",
                                    "schema": {"type": "string", "pattern": "(?=a)b"},
                                }
                            ],
                            "responses": OK,
                        }
                    }
                }
            ),
            "linear-time engine",
        ),
        (
            minimal_spec(
                {
                    "/a": {"get": {"responses": OK}},
                    "/b": {"get": {"responses": OK, "parameters": [{"$ref": "other.yaml#/P"}]}},
                }
            ),
            "inline spec can only use local references",
        ),
        (
            minimal_spec(
                {
                    "/b": {
                        "get": {
                            "responses": OK,
                            "parameters": [{"$ref": "https://evil.example/p.yaml#/P"}],
                        }
                    }
                }
            ),
            "remote references are not supported",
        ),
    ],
)
def test_bad_specs_are_refused_with_a_clear_message(spec, expected):
    text = _problems(spec)
    assert expected in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"openapi: [unclosed", "not valid YAML/JSON"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"- a list\n- not a mapping\n", "must be a mapping"),
        (
            b"openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths:\n  /a: {get: {responses: {200: {description: ok}}}}\n",
            "is not a string",
        ),
    ],
)
def test_malformed_files_are_refused_by_validate(tmp_path, content, expected):
    (tmp_path / "openapi.yaml").write_bytes(content)
    (tmp_path / "policy.yaml").write_text("openapi: {specFile: openapi.yaml}\n")
    result = run_wardgate("validate", str(tmp_path / "policy.yaml"))
    assert result.returncode == 1
    assert expected in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_missing_file_and_refs_outside_the_directory(tmp_path):
    (tmp_path / "policy.yaml").write_text("openapi: {specFile: missing.yaml}\n")
    with pytest.raises(PolicyError) as info:
        load_compiled(tmp_path / "policy.yaml")
    assert "cannot read the file" in str(info.value)
    (tmp_path / "secret.yaml").write_text("P: {name: a, in: query, schema: {type: string}}\n")
    _write(
        tmp_path / "api",
        "openapi.yaml",
        minimal_spec(
            {"/a": {"get": {"parameters": [{"$ref": "../secret.yaml#/P"}], "responses": OK}}}
        ),
    )
    (tmp_path / "api" / "policy.yaml").write_text("openapi: {specFile: openapi.yaml}\n")
    with pytest.raises(PolicyError) as info:
        load_compiled(tmp_path / "api" / "policy.yaml")
    assert "points outside the spec's directory" in str(info.value)


def test_the_section_needs_exactly_one_source():
    for doc in ["openapi: {}", "openapi: {specFile: a.yaml, inline: {openapi: 3.0.3}}"]:
        with pytest.raises(PolicyError) as info:
            from wardgate.config import load_policy_text

            load_policy_text(doc)
        assert "exactly one of specFile or inline" in str(info.value)


async def test_huge_spec_compiles_and_routes(tmp_path):
    paths = {}
    for i in range(1500):
        paths[f"/r{i}/items/{{id}}"] = {
            "get": {
                "operationId": f"get{i}",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
                    {"name": "q", "in": "query", "schema": {"type": "string", "maxLength": 8}},
                ],
                "responses": OK,
            }
        }
    spec_path = _write(tmp_path, "openapi.json", minimal_spec(paths))
    (tmp_path / "policy.yaml").write_text(f"openapi: {{specFile: {spec_path}}}\n")
    started = time.monotonic()
    policy = load_compiled(tmp_path / "policy.yaml")
    assert time.monotonic() - started < 120  # a bound against hangs, not a speed claim
    assert (await decide(policy, "GET", "/r1499/items/3?q=ok"))["decision"] == "allow"
    assert locations(await decide(policy, "GET", "/r7/items/x")) == ["path:id"]
    assert (await decide(policy, "GET", "/r1500/items/3"))["status"] == 404


def test_validate_reports_what_cannot_be_enforced():
    result = run_wardgate("validate", "examples/petstore/policy.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "filters: limits, openapi" in result.stdout
    notes = result.stdout
    assert "1 operation(s) require a bearer" in notes and "fail closed" in notes
    assert "jwt section is not configured" in notes


def test_yaml_alias_bombs_are_refused_not_expanded(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    bomb = "openapi: 3.0.3\ninfo: {title: t, version: '1'}\npaths: {}\nx-bomb:\n" + "\n".join(
        "  " + line for line in lines
    )
    (tmp_path / "openapi.yaml").write_text(bomb)
    (tmp_path / "policy.yaml").write_text("openapi: {specFile: openapi.yaml}\n")
    started = time.monotonic()
    with pytest.raises(PolicyError) as info:
        load_compiled(tmp_path / "policy.yaml")
    assert "more than 2000000 nodes" in str(info.value)
    assert time.monotonic() - started < 60
