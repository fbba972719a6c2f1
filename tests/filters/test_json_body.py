"""One strict JSON parse per request, shared by the OpenAPI filter and the WAF
(``wardgate.filters.json_body``): the body is decoded once, the strict rules still refuse
duplicate keys and NaN/Infinity, and the WAF still sees every key and value."""

from __future__ import annotations

import json
from typing import Any

import pytest
from multidict import CIMultiDict

from wardgate.config import load_policy_text
from wardgate.filters.api import HttpRequest, LocalReply
from wardgate.filters.json_body import (
    JsonBodyError,
    parse_strict,
    parsed_document,
    strict_document,
)
from wardgate.runtime import CompiledPolicy, RequestPipeline, compile_policy

SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "items", "version": "1"},
    "paths": {
        "/items": {
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {"name": {"type": "string"}},
                            }
                        }
                    },
                },
                "responses": {"200": {"description": "ok"}},
            }
        }
    },
}


def _policy(openapi_mode: str = "enforce") -> CompiledPolicy:
    """OpenAPI (``POST /items``) and the default WAF, enforcing."""
    document = {"openapi": {"inline": SPEC, "mode": openapi_mode}, "waf": {"mode": "enforce"}}
    return compile_policy(load_policy_text(json.dumps(document)))


async def _post(policy: CompiledPolicy, body: bytes) -> tuple[LocalReply | None, HttpRequest]:
    headers = CIMultiDict(
        {
            "host": "api.example",
            "content-type": "application/json",
            "content-length": str(len(body)),
            "user-agent": "test-client/1.0",
            "accept": "application/json",
        }
    )
    request = HttpRequest("POST", "/items", "/items", "", headers)
    reply = await RequestPipeline(policy, request).decode_request(body)
    return reply, request


def _count_documents(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every document a ``JSONDecoder`` decodes from now on (every JSON parser in the chain,
    strict or lenient ``json.loads``, goes through ``raw_decode``)."""
    seen: list[str] = []
    real = json.JSONDecoder.raw_decode

    def counting(decoder: json.JSONDecoder, text: str, idx: int = 0) -> Any:
        seen.append(text)
        return real(decoder, text, idx)

    monkeypatch.setattr(json.JSONDecoder, "raw_decode", counting)
    return seen


async def test_a_json_body_is_parsed_once_for_openapi_and_waf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = _policy()
    decoded = _count_documents(monkeypatch)
    reply, request = await _post(policy, b'{"name": "jacket", "size": "M"}')
    assert reply is None
    assert len(decoded) == 1
    assert request.parsed_json is not None
    assert request.parsed_json.value == {"name": "jacket", "size": "M"}


async def test_the_waf_sees_every_key_and_value_of_the_shared_document() -> None:
    policy = _policy()
    # Valid for the schema (extra properties allowed); the attack sits deep in the
    # document, in a value and in a key.
    body = json.dumps(
        {"name": "jacket", "extra": {"list": ["ok", "1' UNION SELECT password FROM users--"]}}
    ).encode()
    reply, request = await _post(policy, body)
    assert request.parsed_json is not None  # the WAF judged the OpenAPI filter's parse
    assert reply is not None and reply.filter == "waf"
    assert "body:$.extra.list[1]" in {v.location for v in reply.violations}

    key_body = json.dumps({"name": "jacket", "<script>alert(1)</script>": 1}).encode()
    reply, _ = await _post(policy, key_body)
    assert reply is not None and reply.filter == "waf"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"name": "a", "name": "b"}', "same key twice"),
        (b'{"name": "a", "n": {"k": 1, "k": 2}}', "same key twice"),
        (b'{"name": "a", "n": NaN}', "NaN and Infinity"),
        (b'{"name": "a", "n": -Infinity}', "NaN and Infinity"),
        (b'{"name": "\\ud800"}', "unpaired surrogate"),
        (b'{"name": "x\\uDC00y"}', "unpaired surrogate"),
        (b'{"name": "\\u00e9", "n": "\\uD83D"}', "unpaired surrogate"),
        (b'{"name": "\xff"}', "not UTF-8"),
    ],
)
async def test_strict_rules_still_refuse(body: bytes, reason: str) -> None:
    reply, request = await _post(_policy(), body)
    assert reply is not None and reply.filter == "openapi" and reply.status == 400
    assert reason in reply.violations[0].message
    assert request.parsed_json is None  # nothing kept for the WAF to reuse


async def test_a_refused_strict_parse_leaves_the_waf_its_own_parse() -> None:
    """OpenAPI in detect mode records the duplicate and continues; the WAF parses the
    body itself (leniently, as always) and still refuses the attack in it."""
    body = b'{"name": "a", "q": "x", "q": "1\' UNION SELECT password FROM users--"}'
    reply, request = await _post(_policy("detect"), body)
    assert any("same key twice" in v.message for v in request.findings)
    assert reply is not None and reply.filter == "waf"


def test_a_strict_parse_is_what_json_loads_gives() -> None:
    for text in (
        b'{"a": [1, 2.5, -0.0, 1e400, true, null, "\\u00e9\\ud83d\\ude00"], "b": {"": ""}}',
        b'[{"x": {"y": {"z": []}}}, "text", 12345678901234567890]',
        b'"just a string"',
        b'{"escaped backslash": "\\\\ud800", "pair": "\\uD83D\\uDE00", "e": "\\u00E9"}',
    ):
        assert parse_strict(text) == json.loads(text)


def test_a_kept_parse_is_only_reused_for_the_same_bytes() -> None:
    request = HttpRequest("POST", "/", "/", "", CIMultiDict())
    body = b'{"a": 1}'
    assert strict_document(request, body) == {"a": 1}
    assert parsed_document(request, body) is request.parsed_json
    assert parsed_document(request, bytes(bytearray(body))) is request.parsed_json  # equal
    assert parsed_document(request, b'{"a": 2}') is None
    with pytest.raises(JsonBodyError):
        strict_document(request, b'{"a": 1, "a": 1}')
