"""Attack classes the rules were tuned for, each beside the benign look-alike that must pass
(the unpublished sets judge the class, not the CRS test)."""

from __future__ import annotations

import pytest

from tests.filters.waf.conftest import run


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
