"""Session fixation: a framework session id as a parameter counts only when the request
comes from another site or from no page (a rule that ``requires`` a condition rule)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from tests.filters.waf.conftest import run
from wardgate.filters.waf.rules import RuleError, check_requires, parse_rule_file
from wardgate.filters.waf.site import CROSS, NONE, SAME, referer_site


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Host": "app.example"}, NONE),
        ({"Host": "app.example", "Referer": " "}, NONE),
        ({"Host": "app.example", "Referer": "https://app.example/page"}, SAME),
        ({"Host": "App.Example:8443", "Referer": "https://user@app.example:8443/x?y"}, SAME),
        ({"Host": "[::1]:80", "Referer": "http://[::1]/"}, SAME),
        ({"Host": "app.example", "Referer": "https://app.example.evil.test/"}, CROSS),
        ({"Host": "app.example", "Referer": "https://evil.test/?app.example"}, CROSS),
        ({"Host": "app.example", "Referer": "app.example/page"}, CROSS),
        ({"Referer": "https://app.example/"}, CROSS),
    ],
)
def test_referer_site(headers, expected):
    assert referer_site(CIMultiDict(headers)) == expected


@pytest.mark.parametrize(
    "headers",
    [{}, {"Referer": "https://attacker.example/login"}],
)
def test_session_id_from_another_site_or_no_page_is_refused(default_waf, headers):
    reply, _ = run(default_waf, "/login?jsessionid=74B0CB414BD7", headers=headers)
    assert reply is not None and reply.status == 403
    reply, _ = run(
        default_waf,
        "/login",
        method="POST",
        headers=headers,
        body='{"PHPSESSID": "abc"}',
        content_type="application/json",
    )
    assert reply is not None and reply.status == 403


def test_same_site_session_links_and_plain_requests_pass_without_findings(default_waf):
    same = {"Referer": "https://app.example/account"}
    reply, request = run(default_waf, "/login?jsessionid=74B0CB414BD7", headers=same)
    assert reply is None
    assert request.findings == []  # the condition rule is never reported on its own
    reply, request = run(default_waf, "/items?session_id=1&page=2")
    assert reply is None and request.findings == []


def test_requires_must_name_a_rule_of_the_same_family():
    text = """
family: protocol
defaults: {operator: rx, targets: [ARGS], message: m}
rules:
  - {id: "900001", pattern: a, requires: "900002"}
"""
    rules = parse_rule_file("x.yaml", text)
    with pytest.raises(RuleError, match="900001 requires 900002"):
        check_requires(rules)
    with pytest.raises(RuleError, match="six-digit"):
        parse_rule_file("x.yaml", text.replace('"900002"', "nope"))
