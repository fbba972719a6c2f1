"""The policy schema: strictness, error paths, digests, redaction."""

from __future__ import annotations

from typing import Annotated

import pytest

from wardgate.config import PolicyError, load_policy_text
from wardgate.config.base import SECRET, SpecModel, redacted_dump


def test_empty_document_is_the_default_policy():
    assert load_policy_text("").digest() == load_policy_text("{}").digest()
    assert load_policy_text("").limits.max_headers_count == 100


def test_digest_ignores_formatting_but_not_meaning():
    a = load_policy_text("limits: {maxHeadersCount: 50}")
    b = load_policy_text("# comment\nlimits:\n  maxHeadersCount: 50\n")
    c = load_policy_text("limits: {maxHeadersCount: 51}")
    assert a.digest() == b.digest() != c.digest()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("limits: {maxHeaderCount: 5}", "limits.maxHeaderCount: unknown field"),
        ("limits: {maxHeadersCount: -1}", "limits.maxHeadersCount: Input should be greater"),
        ("proxy: {timeouts: {idle: 5}}", "proxy.timeouts.idle: Value error, a duration is"),
        ("proxy: {timeouts: {idle: 0s}}", "proxy.timeouts.idle: Value error, a duration must"),
        ("proxy: {timeouts: {idle: 5 days}}", "proxy.timeouts.idle: Value error, invalid"),
        (
            "headers: {request: {add: [{name: 'bad name', value: x}]}}",
            "headers.request.add[0].name",
        ),
        (
            'headers: {response: {add: [{name: x, value: "a\\r\\nb"}]}}',
            "headers.response.add[0].value",
        ),
        ("limits: {allowedMethods: [GET, GET]}", "allowedMethods lists a method twice"),
        ("- a list", "the document must be a mapping"),
        ("a: 1\na: 2", "duplicate key 'a'"),
        ("max_headers_count: 5", "max_headers_count: unknown field"),
    ],
)
def test_errors_name_the_field_path(text: str, expected: str):
    with pytest.raises(PolicyError) as info:
        load_policy_text(text)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_durations_parse_with_units():
    spec = load_policy_text("proxy: {timeouts: {connect: 250ms, request: 1.5s, idle: 2m}}")
    assert spec.proxy.timeouts.connect == 0.25
    assert spec.proxy.timeouts.request == 1.5
    assert spec.proxy.timeouts.idle == 120


def test_secret_fields_are_redacted_in_dumps():
    class WithSecret(SpecModel):
        name: str
        key: Annotated[str, SECRET]

    class Outer(SpecModel):
        items: tuple[WithSecret, ...]

    outer = Outer.model_validate({"items": [{"name": "a", "key": "hunter2"}]})
    assert redacted_dump(outer) == {"items": [{"name": "a", "key": "[redacted]"}]}
