"""Parsers: every part of a request becomes targets with the right location; bodies are
decompressed within caps; structural limits refuse with their own reason; nothing raises."""

from __future__ import annotations

import gzip
import json
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.filters.waf.conftest import run, waf
from wardgate.filters.waf.bodies import BodyParser, Shape, decompress
from wardgate.filters.waf.targets import Target

SHAPE = Shape(
    max_parameters=50,
    max_name_length=64,
    max_value_length=1000,
    max_depth=8,
    max_decompressed_bytes=10000,
    max_decompression_ratio=20,
)


def parse(body: bytes, content_type: str) -> list[Target]:
    out: list[Target] = []
    assert BodyParser(SHAPE).parse(body, content_type, out) is None
    return out


def pairs(targets: list[Target], kind: str) -> list[tuple[str, str]]:
    return [(t.location, t.value) for t in targets if t.kind == kind]


def test_form_repeated_keys_each_count():
    out = parse(b"a=1&a=2&b%5B%5D=x", "application/x-www-form-urlencoded")
    assert pairs(out, "ARGS") == [("body:a", "1"), ("body:a", "2"), ("body:b[]", "x")]


def test_json_every_key_and_value_with_its_path():
    doc = {"user": {"name": "x", "tags": ["a", {"deep key": "b"}]}, "n": 5}
    out = parse(json.dumps(doc).encode(), "application/json; charset=utf-8")
    values = dict(pairs(out, "ARGS"))
    assert values["body:$.user.name"] == "x"
    assert values["body:$.user.tags[0]"] == "a"
    assert values['body:$.user.tags[1]["deep key"]'] == "b"
    assert ("body:$.user", "user") in pairs(out, "ARGS_NAMES")


def test_invalid_json_is_inspected_raw():
    out = parse(b"{'not': json", "application/json")
    assert ("body", "{'not': json") in pairs(out, "ARGS")


def test_multipart_names_filenames_and_part_bodies():
    body = (
        b'--xyz\r\nContent-Disposition: form-data; name="comment"\r\n\r\nhello\r\n'
        b'--xyz\r\nContent-Disposition: form-data; name="upload"; filename="a.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nfile text\r\n--xyz--\r\n"
    )
    out = parse(body, "multipart/form-data; boundary=xyz")
    assert ("body:comment", "hello") in pairs(out, "ARGS")
    assert ("file:upload", "a.txt") in pairs(out, "FILES")
    assert ("file:upload", "file text") in pairs(out, "FILES_CONTENT")


def test_multipart_without_boundary_is_refused():
    problem = BodyParser(SHAPE).parse(b"--x\r\n\r\n", "multipart/form-data", [])
    assert problem is not None and problem.reason == "multipart_invalid"


def test_xml_elements_attributes_and_entities_never_resolved():
    body = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b'<r><a id="7">text &xxe;</a></r>'
    )
    out = parse(body, "application/xml")
    assert ("body:/r/a/@id", "7") in pairs(out, "ARGS")
    assert any(v.startswith("text") for _, v in pairs(out, "ARGS"))
    decls = pairs(out, "XML_DECL")
    assert any("SYSTEM file:///etc/passwd" in v for _, v in decls)
    # The entity was not expanded: no target holds the file's would-be content.
    assert not any("root:" in t.value for t in out)


def test_binary_body_is_not_parsed_as_parameters():
    out = parse(bytes(range(256)) * 4, "application/octet-stream")
    assert pairs(out, "ARGS") == []
    assert [t.kind for t in out] == ["REQUEST_BODY"]


def test_too_many_parameters_and_too_deep_have_their_own_reasons():
    many = "&".join(f"p{i}=1" for i in range(51)).encode()
    assert (
        BodyParser(SHAPE).parse(many, "application/x-www-form-urlencoded", []).reason
        == "too_many_parameters"
    )
    deep = b"[" * 20 + b"]" * 20
    assert BodyParser(SHAPE).parse(deep, "application/json", []).reason == "body_too_deep"
    long_value = b"v=" + b"x" * 1001
    assert (
        BodyParser(SHAPE).parse(long_value, "application/x-www-form-urlencoded", []).reason
        == "value_too_long"
    )


def test_gzip_and_deflate_bodies_are_inspected_decompressed():
    assert decompress(gzip.compress(b"a=1"), "gzip", SHAPE) == b"a=1"
    assert decompress(zlib.compress(b"a=2"), "deflate", SHAPE) == b"a=2"


def test_decompression_bombs_and_unknown_encodings_are_refused():
    bomb = gzip.compress(b"0" * 100000)
    problem = decompress(bomb, "gzip", SHAPE)
    assert getattr(problem, "reason", None) == "decompressed_body_too_large"
    assert getattr(decompress(b"x", "br", SHAPE), "status", None) == 415
    assert getattr(decompress(b"not gzip", "gzip", SHAPE), "status", None) == 400


def test_compressed_attack_is_blocked_through_the_filter():
    config = waf()
    body = gzip.compress(b'{"q": "1\' UNION SELECT password FROM users--"}')
    reply, _ = run(
        config,
        "/search",
        method="POST",
        body=body,
        headers=[("Content-Encoding", "gzip")],
        content_type="application/json",
    )
    assert reply is not None and reply.status == 403
    assert any(v.location == "body:$.q" for v in reply.violations)


def test_path_segments_query_headers_and_cookies_all_have_locations():
    config = waf()
    reply, _ = run(
        config,
        "/a/b?x=1",
        headers=[("Cookie", "sid=1; pref=<script>alert(1)</script>")],
    )
    assert reply is not None and {v.location for v in reply.violations} == {"cookie:pref"}


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(max_size=400),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=b",
            "application/xml",
            "text/plain",
            "",
        ]
    ),
)
def test_parsers_never_raise_on_arbitrary_bytes(body, content_type):
    out: list[Target] = []
    BodyParser(SHAPE).parse(body, content_type, out)
    assert all(isinstance(t.value, str) for t in out)
