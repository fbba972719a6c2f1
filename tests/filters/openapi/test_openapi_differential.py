"""Differential tests: for generated requests (valid and invalid), Wardgate and
openapi-core (the reference implementation) agree on valid versus invalid.

The policy runs with the options that have no openapi-core counterpart turned off
(unknown query parameters allowed, security not checked). Generated values avoid the
inputs where Wardgate is deliberately stricter (dot segments, encoded separators), which
have their own tests, and integral floats (``1.0``) for ``integer`` fields: Wardgate
validates OpenAPI 3.0 schemas with JSON Schema 2020-12 numerics, where ``1.0`` is an
integer, as in 3.1; openapi-core follows draft 4 for 3.0 and refuses it. Likewise numbers
in URLs with ``_`` or surrounding spaces (``1_0``, `` 5``): openapi-core converts them
with Python's ``int()``, which accepts both; Wardgate accepts only plain digits, as the
services behind it (in any language) parse them."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest

from tests.filters.openapi.helpers import decide, policy_for

SPEC_30: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "differential", "version": "1"},
    "paths": {
        "/items/{id}": {
            "parameters": [
                {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                }
            ],
            "get": {
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 50},
                    },
                    {
                        "name": "q",
                        "in": "query",
                        "schema": {"type": "string", "maxLength": 5, "pattern": "^[a-z]*$"},
                    },
                    {"name": "flag", "in": "query", "schema": {"type": "boolean"}},
                    {
                        "name": "price",
                        "in": "query",
                        "schema": {
                            "type": "number",
                            "minimum": 0,
                            "exclusiveMaximum": True,
                            "maximum": 10,
                        },
                    },
                    {
                        "name": "tags",
                        "in": "query",
                        "style": "form",
                        "explode": False,
                        "schema": {
                            "type": "array",
                            "maxItems": 3,
                            "items": {"type": "string", "enum": ["a", "b", "c"]},
                        },
                    },
                    {
                        "name": "ids",
                        "in": "query",
                        "schema": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    },
                    {
                        "name": "x-mode",
                        "in": "header",
                        "schema": {"type": "string", "enum": ["fast", "slow"]},
                    },
                    {
                        "name": "session",
                        "in": "cookie",
                        "schema": {"type": "string", "minLength": 3},
                    },
                    {"name": "need", "in": "query", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "ok"}},
            },
            "put": {
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Item"}}
                    },
                },
                "responses": {"200": {"description": "ok"}},
            },
        }
    },
    "components": {
        "schemas": {
            "Item": {
                "type": "object",
                "required": ["name", "kind"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 10},
                    "kind": {"type": "string", "enum": ["tool", "toy"]},
                    "price": {"type": "number", "minimum": 0, "maximum": 1000},
                    "count": {"type": "integer", "format": "int32"},
                    "note": {"type": "string", "nullable": True},
                    "parts": {
                        "type": "array",
                        "maxItems": 2,
                        "items": {"$ref": "#/components/schemas/Part"},
                    },
                    "owner": {
                        "oneOf": [
                            {
                                "type": "object",
                                "required": ["user"],
                                "properties": {"user": {"type": "string"}},
                                "additionalProperties": False,
                            },
                            {
                                "type": "object",
                                "required": ["team"],
                                "properties": {"team": {"type": "integer"}},
                                "additionalProperties": False,
                            },
                        ]
                    },
                },
            },
            "Part": {
                "type": "object",
                "required": ["n"],
                "properties": {
                    "n": {"type": "integer", "minimum": 1},
                    "sub": {"$ref": "#/components/schemas/Part"},
                },
            },
        }
    },
}

SPEC_31: dict[str, Any] = json.loads(
    json.dumps(SPEC_30)
    .replace('"3.0.3"', '"3.1.0"')
    .replace('"exclusiveMaximum": true, "maximum": 10', '"exclusiveMaximum": 10')
    .replace('"type": "string", "nullable": true', '"type": ["string", "null"]')
)

TEXT = st.text(alphabet="abcxyz019-+.", max_size=7)
INT_TEXT = st.one_of(st.integers(-5, 1200).map(str), TEXT)
NUM_TEXT = st.one_of(st.floats(-2, 12, allow_nan=False).map(lambda f: f"{f:.3f}"), INT_TEXT)
BOOL_TEXT = st.sampled_from(["true", "false", "True", "1", "", "yes"])

# name: (valid values, anything - often invalid). Each request corrupts at most one
# field, so about half the generated requests are valid.
QUERY = {
    "limit": (st.integers(1, 50).map(str), INT_TEXT),
    "q": (st.text(alphabet="abcxyz", max_size=5), TEXT),
    "flag": (st.sampled_from(["true", "false"]), BOOL_TEXT),
    "price": (st.floats(0, 9.99).map(lambda f: f"{f:.2f}"), NUM_TEXT),
    "tags": (
        st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3).map(",".join),
        st.lists(st.sampled_from(["a", "b", "c", "d", ""]), min_size=1, max_size=4).map(",".join),
    ),
}
FIELDS = [*QUERY, "ids", "need", "x-mode", "session", "id"]


@st.composite
def get_requests(draw: st.DrawFn) -> dict[str, Any]:
    bad = draw(st.sampled_from([None, None, None, None, *FIELDS]))
    query: list[tuple[str, str]] = []
    for name, (valid, anything) in QUERY.items():
        value = draw(anything if bad == name else st.one_of(st.none(), valid))
        if value is not None:
            query.append((name, value))
    ids = (
        st.lists(INT_TEXT, max_size=3)
        if bad == "ids"
        else st.lists(st.integers(0, 99).map(str), max_size=3)
    )
    query.extend(("ids", value) for value in draw(ids))
    if bad != "need":
        query.append(("need", draw(st.text(alphabet="abc", min_size=1, max_size=3))))
    headers = {}
    mode = draw(
        st.sampled_from(["fast", "slow", "medium"])
        if bad == "x-mode"
        else maybe(st.sampled_from(["fast", "slow"]))
    )
    if mode is not None:
        headers["x-mode"] = mode
    cookies = {}
    session = draw(
        st.text(alphabet="abcdef0123", max_size=5)
        if bad == "session"
        else maybe(st.text(alphabet="abcdef", min_size=3, max_size=5))
    )
    if session is not None:
        cookies["session"] = session
    item_id = draw(
        INT_TEXT.filter(lambda s: s.strip(" .") != "")
        if bad == "id"
        else st.integers(1, 1000).map(str)
    )
    return {"method": "get", "id": item_id, "query": query, "headers": headers, "cookies": cookies}


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


PART = st.deferred(
    lambda: st.fixed_dictionaries(
        {"n": st.one_of(st.integers(1, 3), st.integers(1, 3), st.integers(-1, 0), st.just("1"))},
        optional={"sub": PART},
    )
)
VALID_FIELDS = {
    "name": st.text(alphabet="ab", min_size=1, max_size=10),
    "kind": st.sampled_from(["tool", "toy"]),
}
OPTIONAL_FIELDS = {
    "price": st.floats(0, 1000, allow_nan=False),
    "count": st.integers(-(2**31), 2**31 - 1),
    "note": st.one_of(st.none(), st.text(max_size=3)),
    "parts": st.lists(PART, max_size=2),
    "owner": st.one_of(
        st.fixed_dictionaries({"user": st.text(max_size=3)}),
        st.fixed_dictionaries({"team": st.integers(0, 3)}),
    ),
    "extra": st.integers(),
}
BROKEN = {
    "name": st.one_of(
        st.just(""), st.text(alphabet="ab", min_size=11, max_size=12), st.integers(), st.none()
    ),
    "kind": st.sampled_from(["food", "", None, 1]),
    "price": st.one_of(
        st.floats(-10, -0.1), st.floats(1000.1, 2000), st.text(max_size=2), st.booleans()
    ),
    "count": st.one_of(
        st.integers(2**31, 2**40),
        st.integers(-(2**40), -(2**31) - 1),
        st.floats(0.5, 3.5).filter(lambda f: not f.is_integer()),
        st.just("1"),
    ),
    "note": st.one_of(st.integers(), st.lists(st.none(), max_size=1)),
    "parts": st.one_of(
        st.lists(PART, min_size=3, max_size=4), st.just([{"n": 1, "sub": {"n": 0}}]), st.just([{}])
    ),
    "owner": st.one_of(
        st.just({"user": "u", "team": 1}), st.just({}), st.just({"user": 1}), st.just("me")
    ),
}


@st.composite
def put_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {k: draw(v) for k, v in VALID_FIELDS.items()}
    for key, strategy in OPTIONAL_FIELDS.items():
        if draw(st.booleans()):
            body[key] = draw(strategy)
    bad = draw(st.sampled_from([None, None, None, None, "missing", "id", "shape", *BROKEN]))
    item_id = str(draw(st.integers(1, 1000)))
    document: Any = body
    if bad in BROKEN:
        body[bad] = draw(BROKEN[bad])
    elif bad == "missing":
        del body[draw(st.sampled_from(sorted(VALID_FIELDS)))]
    elif bad == "id":
        item_id = draw(st.sampled_from(["0", "1001", "x"]))
    elif bad == "shape":
        document = draw(st.one_of(st.lists(st.integers(), max_size=2), st.just("x"), st.none()))
    return {
        "method": "put",
        "id": item_id,
        "query": [],
        "headers": {},
        "cookies": {},
        "body": json.dumps(document).encode(),
    }


ORACLES = {"3.0": OpenAPI.from_dict(SPEC_30), "3.1": OpenAPI.from_dict(SPEC_31)}
POLICIES = {
    version: policy_for(spec, rejectUnknownQueryParameters=False, security="ignore")
    for version, spec in (("3.0", SPEC_30), ("3.1", SPEC_31))
}


def oracle_valid(version: str, req: dict[str, Any]) -> tuple[bool, str]:
    mock = MockRequest(
        "http://localhost",
        req["method"],
        f"/items/{quote(req['id'], safe='')}",
        args=req["query"],
        headers=req["headers"],
        cookies=req["cookies"],
        data=req.get("body"),
        content_type="application/json",
    )
    try:
        ORACLES[version].validate_request(mock)
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"[:300]
    return True, ""


def wardgate_valid(version: str, req: dict[str, Any]) -> tuple[bool, Any]:
    target = f"/items/{quote(req['id'], safe='')}"
    if req["query"]:
        target += "?" + urlencode(req["query"], quote_via=quote)
    headers = dict(req["headers"])
    if req["cookies"]:
        headers["cookie"] = "; ".join(f"{k}={v}" for k, v in req["cookies"].items())
    body = req.get("body", b"")
    if body:
        headers["content-type"] = "application/json"
    result = asyncio.run(decide(POLICIES[version], req["method"].upper(), target, headers, body))
    return result["decision"] == "allow", result.get("violations")


def _agree(version: str, req: dict[str, Any]) -> None:
    expected, why = oracle_valid(version, req)
    got, violations = wardgate_valid(version, req)
    assert got == expected, (
        f"openapi-core says {expected} ({why}); wardgate {got} {violations}; {req}"
    )


@pytest.mark.parametrize("version", ["3.0", "3.1"])
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=get_requests())
def test_parameters_agree_with_openapi_core(version, req):
    _agree(version, req)


@pytest.mark.parametrize("version", ["3.0", "3.1"])
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=put_requests())
def test_json_bodies_agree_with_openapi_core(version, req):
    _agree(version, req)


FORM_SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "form", "version": "1"},
    "paths": {
        "/form": {
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string", "maxLength": 5},
                                    "count": {"type": "integer", "minimum": 1},
                                    "flag": {"type": "boolean"},
                                    "tags": {
                                        "type": "array",
                                        "maxItems": 2,
                                        "items": {"type": "string"},
                                    },
                                },
                            }
                        }
                    },
                },
                "responses": {"200": {"description": "ok"}},
            }
        }
    },
}
FORM_ORACLE = OpenAPI.from_dict(FORM_SPEC)
FORM_POLICY = policy_for(FORM_SPEC, security="ignore")
FORM_FIELDS = {
    "name": (st.text(alphabet="abc", max_size=5), st.text(alphabet="abc", min_size=6, max_size=7)),
    "count": (st.integers(1, 99).map(str), st.sampled_from(["0", "-3", "x", "1.5", ""])),
    "flag": (st.sampled_from(["true", "false"]), st.sampled_from(["maybe", "2", ""])),
}


@st.composite
def form_bodies(draw: st.DrawFn) -> bytes:
    bad = draw(st.sampled_from([None, None, None, "missing", "tags", *FORM_FIELDS]))
    pairs: list[tuple[str, str]] = []
    for name, (valid, broken) in FORM_FIELDS.items():
        if name == "name" and bad == "missing":
            continue
        if bad == name:
            pairs.append((name, draw(broken)))
        elif name == "name" or draw(st.booleans()):
            pairs.append((name, draw(valid)))
    tags = draw(
        st.lists(st.text(alphabet="xy", min_size=1, max_size=2), min_size=3, max_size=4)
        if bad == "tags"
        else st.lists(st.text(alphabet="xy", min_size=1, max_size=2), max_size=2)
    )
    pairs.extend(("tags", tag) for tag in tags)
    order = draw(st.permutations(pairs))
    return urlencode(order).encode()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=form_bodies())
def test_form_bodies_agree_with_openapi_core(body):
    mock = MockRequest(
        "http://localhost",
        "post",
        "/form",
        data=body,
        content_type="application/x-www-form-urlencoded",
    )
    try:
        FORM_ORACLE.validate_request(mock)
        expected, why = True, ""
    except Exception as exc:
        expected, why = False, f"{type(exc).__name__}: {exc}"[:300]
    headers = {"content-type": "application/x-www-form-urlencoded"}
    result = asyncio.run(decide(FORM_POLICY, "POST", "/form", headers, body))
    got = result["decision"] == "allow"
    assert got == expected, (
        f"openapi-core {expected} ({why}); wardgate {result.get('violations')}; {body!r}"
    )
