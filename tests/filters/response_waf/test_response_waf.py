"""Unit tests of the response side: leak signatures per stack (table-driven, with benign
look-alikes that must pass), content-type selection, decoding, modes and headers."""

from __future__ import annotations

import gzip
import zlib

import pytest
from multidict import CIMultiDict

from wardgate.config import PolicyError, load_policy_text
from wardgate.filters.api import HttpRequest, HttpResponse
from wardgate.filters.response_waf import compile, default_scanner, inspectable
from wardgate.runtime import compile_policy

LEAKING = [
    ("leak.sql.mysql", b"You have an error in your SQL syntax; check the manual"),
    ("leak.sql.mysql", b"<b>Warning</b>:  mysqli_fetch_array() expects parameter 1"),
    ("leak.sql.postgresql", b'ERROR:  syntax error at or near "\'"\nLINE 1: SELECT'),
    ("leak.sql.postgresql", b"psycopg2.errors.UndefinedColumn: column x does not exist"),
    ("leak.sql.mssql", b"Unclosed quotation mark after the character string ''."),
    ("leak.sql.mssql", b"System.Data.SqlClient.SqlException (0x80131904): Invalid"),
    ("leak.sql.oracle", b"ORA-01756: quoted string not properly terminated"),
    ("leak.sql.sqlite", b'sqlite3.OperationalError: near "\'": syntax error'),
    ("leak.sql.generic", b"SQLSTATE[42000]: Syntax error or access violation: 1064"),
    ("leak.sql.generic", b"java.sql.SQLSyntaxErrorException: Unknown column"),
    ("leak.trace.python", b"Traceback (most recent call last):\n  File"),
    ("leak.trace.python", b'{"detail":"  File \\"/app/main.py\\", line 7, in handler"}'),
    (
        "leak.trace.java",
        b"\tat org.springframework.web.servlet.DispatcherServlet.doDispatch"
        b"(DispatcherServlet.java:1067)",
    ),
    ("leak.trace.java", b'Exception in thread "main" java.lang.IllegalStateException'),
    ("leak.trace.php", b"PHP Fatal error:  Uncaught TypeError: count()"),
    ("leak.trace.php", b"#0 /var/www/app/src/Db.php(88): PDO->query()"),
    (
        "leak.trace.dotnet",
        b"   at Shop.Web.OrdersController.Get(Int32 id) in "
        b"C:\\src\\Shop.Web\\OrdersController.cs:line 31",
    ),
    ("leak.trace.dotnet", b"--- End of stack trace from previous location ---"),
    (
        "leak.trace.node",
        b"    at Layer.handle [as handle_request] "
        b"(/app/node_modules/express/lib/router/layer.js:95:5)",
    ),
    (
        "leak.trace.node",
        b"at process.processTicksAndRejections (node:internal/process/task_queues:95:5)",
    ),
    ("leak.listing", b"<html><head><title>Index of /uploads</title>"),
    ("leak.listing", b"<h2>Directory listing for /</h2>"),
    ("leak.listing", b"[To Parent Directory]<br><br>"),
]

BENIGN = [
    b'{"items": [{"id": 1, "name": "O\'Brien"}], "next": null}',
    b"<html><body><h1>Order history</h1><p>An error occurred? Try again.</p></body></html>",
    b"We use SQL and Python at work; see our index of products.",
    b"The traceback module prints stack traces; at least 3 errors were fixed.",
    b'{"message": "Look at the file utils.js for details", "line": 42}',
    b"Meet us at Main St. (corner 5th) at 10:30.",
]


@pytest.mark.parametrize(("expected", "body"), LEAKING)
def test_leak_signatures(expected: str, body: bytes) -> None:
    found = default_scanner().scan(b"<p>some page</p>\n" + body + b"\n</p>")
    assert found is not None, body
    assert found.signature.id == expected


@pytest.mark.parametrize("body", BENIGN)
def test_ordinary_responses_do_not_match(body: bytes) -> None:
    assert default_scanner().scan(body) is None


def test_every_signature_is_tested() -> None:
    from wardgate.filters.response_waf import SIGNATURES

    assert {s.id for s in SIGNATURES} == {expected for expected, _ in LEAKING}


@pytest.mark.parametrize(
    ("content_type", "inspected"),
    [
        ("text/html; charset=utf-8", True),
        ("TEXT/PLAIN", True),
        ("application/json", True),
        ("application/problem+json", True),
        ("application/soap+xml", True),
        (None, True),
        ("text/event-stream", False),
        ("image/png", False),
        ("application/octet-stream", False),
        ("application/zip", False),
        ("video/mp4", False),
    ],
)
def test_only_text_like_bodies_are_inspected(content_type: str | None, inspected: bool) -> None:
    assert inspectable(content_type) is inspected


def _run(policy: str, status: int, headers: dict[str, str], body: bytes, method: str = "GET"):
    config = compile(load_policy_text(policy))
    assert config is not None
    flt = config.create_filter()
    request = HttpRequest(method, "/x", "/x", "", CIMultiDict(), request_id="rid-1")
    response = HttpResponse(status, CIMultiDict(headers))
    assert flt.encode_headers(request, response) is None
    wants = flt.wants_response_body(request, response)
    reply = flt.encode_body(request, response, body, True) if wants else None
    return request, response, wants, reply


TRACE = b"Traceback (most recent call last):\n"


def test_enforce_replaces_a_leak_with_a_generic_502() -> None:
    _, _, wants, reply = _run("", 500, {"content-type": "text/plain"}, TRACE)
    assert wants and reply is not None
    assert reply.status == 502 and reply.reason == "upstream_leak"
    assert reply.violations[0].rule_id == "response_waf.leak.trace.python"
    body = reply.render_body("rid-1")
    assert b"Traceback" not in body and b"leak" not in body and b"rid-1" in body


def test_detect_records_a_finding_and_lets_it_through() -> None:
    request, _, _, reply = _run(
        "waf: {response: {mode: detect}}", 500, {"content-type": "text/plain"}, TRACE
    )
    assert reply is None
    assert [v.rule_id for v in request.findings] == ["response_waf.leak.trace.python"]


def test_gzip_and_deflate_bodies_are_inspected_decompressed() -> None:
    for coding, data in (("gzip", gzip.compress(TRACE)), ("deflate", zlib.compress(TRACE))):
        headers = {"content-type": "text/plain", "content-encoding": coding}
        assert _run("", 500, headers, data)[3] is not None, coding
    # An encoding it cannot read is let through (listed in limitations), never a 500.
    assert _run("", 500, {"content-type": "text/plain", "content-encoding": "br"}, TRACE)[3] is None
    bad = {"content-type": "text/plain", "content-encoding": "gzip"}
    assert _run("", 500, bad, b"not gzip at all")[3] is None


def test_no_body_responses_and_binary_types_are_not_buffered() -> None:
    assert _run("", 200, {"content-type": "image/png"}, TRACE)[2] is False
    assert _run("", 204, {"content-type": "text/plain"}, b"")[2] is False
    assert _run("", 200, {"content-type": "text/plain"}, b"", method="HEAD")[2] is False


def test_security_headers_defaults_and_options() -> None:
    upstream = {
        "server": "Apache/2.4.1",
        "x-powered-by": "Express",
        "x-aspnet-version": "4.0.30319",
        "content-type": "application/json",
    }
    _, response, _, _ = _run("", 200, upstream, b"{}")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert not {"server", "x-powered-by", "x-aspnet-version"} & set(response.headers)
    assert "strict-transport-security" not in response.headers
    policy = (
        "waf: {response: {securityHeaders: {strictTransportSecurity: 'max-age=63072000; "
        "includeSubDomains; preload', removeServerHeaders: false, contentTypeOptions: false}}}"
    )
    _, response, _, _ = _run(policy, 200, upstream, b"{}")
    assert response.headers["strict-transport-security"] == (
        "max-age=63072000; includeSubDomains; preload"
    )
    assert response.headers["server"] == "Apache/2.4.1"
    assert "x-content-type-options" not in response.headers


def test_invalid_hsts_value_is_a_clear_error() -> None:
    with pytest.raises(PolicyError, match="strictTransportSecurity"):
        load_policy_text("waf: {response: {securityHeaders: {strictTransportSecurity: 'yes'}}}")


def test_off_modes_and_chain_placement() -> None:
    assert compile(load_policy_text("waf: {mode: off}")) is None
    headers_only = compile(load_policy_text("waf: {response: {mode: off}}"))
    assert headers_only is not None and headers_only.response_body_limit is None
    nothing = (
        "waf: {response: {mode: off, securityHeaders: {contentTypeOptions: false, "
        "removeServerHeaders: false}}}"
    )
    assert compile(load_policy_text(nothing)) is None
    policy = compile_policy(load_policy_text(""))
    assert policy.filter_names()[-1] == "response_waf"
    assert policy.response_body_limit == 65536
