"""The shipped rule set and the rule schema: every family is covered, every rule compiles,
and a malformed rule file is refused with a message naming the file and rule."""

from __future__ import annotations

import pytest

from tests.filters.waf.oracle import scan_each
from wardgate.config.waf import WafFamily
from wardgate.filters.api import FilterCompileError
from wardgate.filters.waf.engine import Engine
from wardgate.filters.waf.filter import shipped_rules
from wardgate.filters.waf.rules import RuleError, parse_rule_file


def test_every_family_has_paranoia_level_1_rules():
    families = {r.family for r in shipped_rules() if r.paranoia_level == 1}
    assert families == set(WafFamily)


def test_rule_ids_are_unique_and_messages_present():
    rules = shipped_rules()
    assert len({r.id for r in rules}) == len(rules)
    assert all(r.message and r.kinds for r in rules)


GOOD = """
family: sqli
rules:
  - id: "999001"
    targets: [ARGS, "!REQUEST_HEADERS:referer"]
    transformations: [urlDecodeUni]
    operator: rx
    pattern: "evil"
    message: test rule
"""


def test_a_valid_file_parses_with_defaults_applied():
    (rule,) = parse_rule_file("t.yaml", GOOD)
    assert (rule.id, rule.family, rule.paranoia_level, rule.score) == (
        "999001",
        WafFamily.SQLI,
        1,
        5,
    )
    assert rule.applies_to("REQUEST_HEADERS", "Referer") is False


@pytest.mark.parametrize(
    ("confidence", "weak", "shape"),
    [("strong", False, False), ("weak", True, False), ("shape", True, True)],
)
def test_confidence_sets_how_a_rule_is_corroborated(confidence, weak, shape):
    text = GOOD.replace("message: test rule", f"message: t\n    confidence: {confidence}")
    (rule,) = parse_rule_file("t.yaml", text)
    assert (rule.weak, rule.shape) == (weak, shape)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("operator: rx", "operator: regex"), "operator must be one of"),
        (("[urlDecodeUni]", "[urlDecode]"), "unknown transformation"),
        (("[ARGS,", "[ARGZ,"), "unknown target"),
        (('"999001"', '"99"'), "six digits"),
        (("family: sqli", "family: sqlx"), "unknown family"),
        (("message: test rule", "mesage: test rule"), "unknown fields"),
        (("message: test rule", "message: t\n    confidence: hint"), "strong, weak or shape"),
    ],
)
def test_malformed_rules_are_refused_with_where_and_why(change, message):
    with pytest.raises(RuleError, match=message):
        parse_rule_file("t.yaml", GOOD.replace(*change))


def test_a_pattern_hyperscan_cannot_compile_names_the_rule():
    (rule,) = parse_rule_file("t.yaml", GOOD.replace('"evil"', '"(?=lookahead)"'))
    with pytest.raises(FilterCompileError) as err:
        Engine([rule])
    assert err.value.problems[0].startswith("waf rule 999001.pattern:")


def test_batched_and_one_by_one_scans_agree_on_the_corpus(default_waf):
    """The batched scan (one buffer per kind, separator-safe patterns) must find exactly
    what scanning each value alone finds."""
    from tests.filters.waf.conftest import corpus_path
    from wardgate.filters.waf import corpus
    from wardgate.filters.waf.filter import request_targets

    engine = default_waf.engine
    records = corpus.load(corpus_path())[::3]
    batched_somewhere = False
    for record in records:
        targets = request_targets(corpus.to_request(record))
        content_type = {k.lower(): v for k, v in record.headers}.get("content-type", "")
        default_waf.body_parser.parse(record.body, content_type, targets)
        engine.forget()  # the memo would answer values an earlier test scanned
        batched = {(m.rule.id, m.location) for m in engine.scan(targets)}
        each = {(m.rule.id, m.location) for m in scan_each(engine, targets)}
        assert batched == each, record.id
        batched_somewhere |= len(targets) > 12
    assert batched_somewhere


def test_separator_rewrite_keeps_matches_inside_one_value():
    from wardgate.filters.waf.engine import SEP, separated

    assert separated(r"^a.b$") == r"(?:^|\x01)a[^\x01]b(?:$|\x01)"
    assert separated(r"[^>]x\W") == r"[^\x01>]x[^\w\x01]"
    (rule,) = parse_rule_file("t.yaml", GOOD.replace('"evil"', '"select.{1,50}from"'))
    engine = Engine([rule])
    from wardgate.filters.waf.targets import Target

    split = [
        Target("ARGS", str(i), f"query:{i}", v) for i, v in enumerate(["select a", "from b"] * 4)
    ]
    assert engine.scan(split) == []
    assert SEP not in "".join(t.value for t in split)
    joined = [*split, Target("ARGS", "x", "query:x", "select a from b")]
    assert [m.location for m in engine.scan(joined)] == ["query:x"]


def test_batched_scan_reports_a_repeated_value_at_every_location(default_waf):
    """Equal values share one place in the batch buffer; each target holding one still gets
    its own match (a JSON array whose every element carries the attack)."""
    from wardgate.filters.waf.targets import Target

    attack = "1' UNION SELECT password FROM users--"
    targets = [Target("ARGS", f"$.items[{i}].q", f"body:$.items[{i}].q", attack) for i in range(8)]
    targets += [Target("ARGS", f"$.items[{i}].n", f"body:$.items[{i}].n", "blue") for i in range(8)]
    default_waf.engine.forget()
    batched = {(m.rule.id, m.location) for m in default_waf.engine.scan(targets)}
    each = {(m.rule.id, m.location) for m in scan_each(default_waf.engine, targets)}
    assert batched == each
    assert {location for _, location in batched} == {f"body:$.items[{i}].q" for i in range(8)}


def test_remembered_answers_equal_fresh_scans_on_the_corpus(default_waf):
    """The memo answers a value seen before with the same kind and name: a second pass over
    the corpus, answered from it, finds exactly what scanning afresh finds, in order."""
    from tests.filters.waf.conftest import corpus_path
    from wardgate.filters.waf import corpus
    from wardgate.filters.waf.filter import request_targets

    engine = default_waf.engine
    requests = []
    for record in corpus.load(corpus_path())[::4]:
        targets = request_targets(corpus.to_request(record))
        content_type = {k.lower(): v for k, v in record.headers}.get("content-type", "")
        default_waf.body_parser.parse(record.body, content_type, targets)
        requests.append(targets)
    engine.forget()
    first = [engine.scan(targets) for targets in requests]
    remembered = [engine.scan(targets) for targets in requests]
    assert remembered == first
    assert any(first)
    assert [scan_each(engine, t) for t in requests] == first


def test_the_memo_tells_names_apart_and_stays_bounded():
    """A header rule that looks only at ``Content-Length`` matches a value there, not the
    same value remembered under another name; a flood of distinct values never grows the
    memo past its bound."""
    from wardgate.filters.waf import engine as engine_module
    from wardgate.filters.waf.targets import Target

    (rule,) = parse_rule_file(
        "t.yaml",
        GOOD.replace('[ARGS, "!REQUEST_HEADERS:referer"]', "[REQUEST_HEADERS:content-length]"),
    )
    engine = Engine([rule])
    other = Target("REQUEST_HEADERS", "x-note", "header:x-note", "evil")
    length = Target("REQUEST_HEADERS", "content-length", "header:content-length", "evil")
    for _ in range(2):
        assert engine.scan([other]) == []
        assert [m.location for m in engine.scan([length])] == ["header:content-length"]
    for i in range(engine_module.MEMO_SIZE + 50):
        engine.scan([Target("REQUEST_HEADERS", "x-note", "header:x-note", f"v{i}")])
    assert len(engine._memo) <= engine_module.MEMO_SIZE + 1
