"""The WAF memo: long values remembered by a keyed digest, bounded memory, same answers."""

from __future__ import annotations

from tests.filters.waf.oracle import scan_each
from wardgate.filters.waf import WafConfig
from wardgate.filters.waf.engine import memo as memo_module
from wardgate.filters.waf.targets import Target

ATTACK = "1' UNION SELECT password FROM users WHERE '1'='1"


def _long(text: str, size: int = 2000) -> str:
    filler = "The quick brown fox jumps over the lazy dog. "
    return (filler * (size // len(filler) + 1))[: size - len(text)] + text


def test_a_long_value_is_answered_from_the_memo_by_digest(default_waf: WafConfig):
    """A long benign value is scanned once and then remembered (by a 16-byte digest, not
    its text); the same text with an attack appended is not taken for it."""
    engine = default_waf.engine
    engine.forget()
    benign = Target("ARGS", "note", "query:note", _long(""))
    assert engine.scan([benign]) == []
    assert len(engine._memo) == 1
    (key,) = engine._memo._answers
    assert isinstance(key[2], bytes)
    assert len(key[2]) == memo_module.DIGEST_BYTES
    assert engine.scan([benign]) == []
    attack = Target("ARGS", "note", "query:note", _long(ATTACK))
    found = engine.scan([attack])
    assert found
    assert engine.scan([attack]) == found == scan_each(engine, [attack])


def test_values_over_the_digest_limit_are_not_remembered(default_waf: WafConfig):
    engine = default_waf.engine
    engine.forget()
    huge = Target("ARGS", "note", "query:note", _long(ATTACK, memo_module.MEMO_DIGEST_MAX + 10))
    first = engine.scan([huge])
    assert first
    assert len(engine._memo) == 0
    assert engine.scan([huge]) == first


def test_unique_long_values_keep_the_memo_bounded(default_waf: WafConfig):
    """Per-request-unique long values (a new token per client) never grow the memo past
    its bound: memory stays flat."""
    engine = default_waf.engine
    engine.forget()
    for number in range(memo_module.MEMO_SIZE + 100):
        engine.scan(
            [Target("REQUEST_HEADERS", "x-token", "header:x-token", _long(str(number), 400))]
        )
    assert len(engine._memo) <= memo_module.MEMO_SIZE + 1


def test_a_repeated_raw_body_is_remembered_by_its_own_engine(default_waf: WafConfig):
    """The raw body is scanned by an engine of just the rules that look at it; the main
    engine looks a repeated body up in that engine's memo directly, and the answer (an
    XML external entity found) is the same the second time as a scan without any memo finds."""
    engine = default_waf.engine
    engine.forget()
    body = Target(
        "REQUEST_BODY",
        "",
        "body",
        _long('<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>', 1500),
    )
    first = engine.scan([body])
    own = engine._own["REQUEST_BODY"]
    assert len(own._memo) == 1
    assert len(engine._memo) == 0
    assert first, "the raw-body rules should find the external entity"
    assert engine.scan([body]) == first == scan_each(engine, [body])
