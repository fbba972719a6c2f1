"""Detection and false positives on the CRS-derived corpus at the default level.

The thresholds are the bar the WAF must clear: at least the issue's targets (90% detection,
at most 10% of the attack-like benign requests refused) and never below what the rules
reached when last tuned (93.2% detection, 81.7% in a header, 84.0% in the path), so a rule
change that loses detection fails here."""

from __future__ import annotations

import asyncio

import pytest

from tests.filters.waf.conftest import corpus_path
from wardgate.filters.waf import corpus


@pytest.fixture(scope="module")
def report(default_waf) -> corpus.Report:
    records = corpus.select(corpus.load(corpus_path()), paranoia_level=1)
    return asyncio.run(corpus.evaluate(default_waf, records))


def test_corpus_selection_is_the_documented_one():
    records = corpus.select(corpus.load(corpus_path()), paranoia_level=1)
    attacks = [r for r in records if r.expect == "block"]
    benign = [r for r in records if r.expect == "allow"]
    assert (len(attacks), len(benign)) == (2221, 876)


def test_detection_at_paranoia_level_1(report):
    print(report.table())
    assert report.detection >= 0.93


def test_false_positives_on_attack_like_benign_requests(report):
    assert report.false_positive_rate <= 0.085  # 8.1% when last tuned; the target is 10%


@pytest.mark.parametrize(("where", "floor"), [("header", 0.815), ("path", 0.835)])
def test_attacks_moved_into_a_header_or_the_path_are_still_caught(default_waf, where, floor):
    """The CRS is weak here (about 11% in arbitrary headers, 20% in the path at PL1)."""
    records = corpus.select(corpus.load(corpus_path()), paranoia_level=1)
    moved = corpus.relocated(records, where)
    assert len(moved) > 1000
    report = asyncio.run(corpus.evaluate(default_waf, moved))
    print(where, report.table())
    assert report.detection >= floor
