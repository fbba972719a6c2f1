"""Request bodies per media type: form, multipart, text, wildcards, JSON suffixes."""

from __future__ import annotations

import json

import pytest

from tests.filters.openapi.helpers import decide, locations, minimal_spec, policy_for

OK = {"200": {"description": "ok"}}
FORM = {"content-type": "application/x-www-form-urlencoded"}
ITEM = {
    "type": "object",
    "required": ["name", "count"],
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "count": {"type": "integer", "minimum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "meta": {"type": "object", "properties": {"a": {"type": "integer"}}},
        "file": {"type": "string", "format": "binary"},
    },
}


@pytest.fixture(scope="module")
def policy():
    content = {
        "application/x-www-form-urlencoded": {"schema": ITEM},
        "multipart/form-data": {"schema": ITEM},
        "application/vnd.item+json": {"schema": ITEM},
        "text/plain": {"schema": {"type": "string", "maxLength": 5}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    }
    spec = minimal_spec(
        {
            "/items": {
                "post": {"requestBody": {"required": True, "content": content}, "responses": OK}
            }
        }
    )
    return policy_for(spec)


def multipart(parts, boundary="XyZ"):
    out = b""
    for name, value, ctype in parts:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
        if ctype == "file":
            out += b'; filename="a.bin"\r\nContent-Type: application/octet-stream'
        elif ctype:
            out += f"\r\nContent-Type: {ctype}".encode()
        out += b"\r\n\r\n" + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode(), {
        "content-type": f"multipart/form-data; boundary={boundary}"
    }


async def test_form_fields_are_typed_by_the_schema(policy):
    assert (await decide(policy, "POST", "/items", FORM, b"name=a+b&count=2&tags=x&tags=y"))[
        "decision"
    ] == "allow"
    result = await decide(
        policy, "POST", "/items", FORM, b"name=toolongvalue1&count=zero&tags=a&tags=b&tags=c"
    )
    assert sorted(locations(result)) == ["body:$.count", "body:$.name", "body:$.tags"]
    result = await decide(policy, "POST", "/items", FORM, b"name=a")
    assert locations(result) == ["body:$"]  # count is required
    result = await decide(policy, "POST", "/items", FORM, b"name=a&name=b&count=1")
    assert locations(result) == ["body"]


async def test_multipart_parts_json_parts_and_files(policy):
    body, headers = multipart(
        [
            ("name", b"rex", None),
            ("count", b"3", None),
            ("meta", b'{"a": 1}', "application/json"),
            ("file", b"\x00\xff\xfe", "file"),
        ]
    )
    assert (await decide(policy, "POST", "/items", headers, body))["decision"] == "allow"
    body, headers = multipart(
        [("name", b"rex", None), ("count", b"0", None), ("meta", b'{"a": "x"}', "application/json")]
    )
    assert sorted(locations(await decide(policy, "POST", "/items", headers, body))) == [
        "body:$.count",
        "body:$.meta.a",
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"no delimiters at all",
        b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\nunterminated',
        b"--XyZ\r\nX-No-Disposition: 1\r\n\r\nv\r\n--XyZ--\r\n",
        b"--XyZ\r\nContent-Disposition: attachment\r\n\r\nv\r\n--XyZ--\r\n",
    ],
)
async def test_malformed_multipart_is_400(policy, body):
    result = await decide(
        policy, "POST", "/items", {"content-type": "multipart/form-data; boundary=XyZ"}, body
    )
    assert (result["status"], locations(result)) == (400, ["body"])


async def test_json_suffix_text_and_wildcard_media_types(policy):
    item = json.dumps({"name": "a", "count": 1}).encode()
    assert (
        await decide(policy, "POST", "/items", {"content-type": "application/vnd.item+json"}, item)
    )["decision"] == "allow"
    assert (
        await decide(
            policy, "POST", "/items", {"content-type": "text/plain; charset=utf-8"}, b"hey"
        )
    )["decision"] == "allow"
    assert locations(
        await decide(policy, "POST", "/items", {"content-type": "text/plain"}, b"too long")
    ) == ["body:$"]
    assert (await decide(policy, "POST", "/items", {"content-type": "image/png"}, b"\x89PNG"))[
        "decision"
    ] == "allow"
    # Declared types only: application/json itself is not declared here.
    assert (await decide(policy, "POST", "/items", {"content-type": "application/json"}, item))[
        "status"
    ] == 415


async def test_content_type_matching_ignores_case_and_parameters(policy):
    headers = {"content-type": "Application/X-WWW-Form-Urlencoded; charset=UTF-8"}
    assert (await decide(policy, "POST", "/items", headers, b"name=a&count=1"))[
        "decision"
    ] == "allow"
