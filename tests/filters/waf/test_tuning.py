"""``wardgate tune``: access-log lines of a detect-mode rollout to the narrowest exceptions,
as a patch that the policy schema accepts and that silences exactly what was seen."""

from __future__ import annotations

import json

import yaml

from tests.filters.waf.conftest import run, waf
from wardgate.filters.waf import tuning


def _line(method: str, path: str, detected=(), refused=None) -> str:
    gw: dict[str, object] = {
        "replied_by": "upstream",
        "reason": "",
        "rule_ids": [],
        "locations": [],
    }
    if detected:
        gw["detected"] = list(detected)
    if refused:
        gw.update(replied_by="waf", reason="attack_detected", rule_ids=[r for r, _ in refused])
        gw["locations"] = [loc for _, loc in refused]
    return json.dumps({"http.request.method": method, "url.path": path, "wardgate": gw})


LOG = [
    _line("POST", "/api/notes/17", ["waf.942100@body:$.items[0].text"]),
    _line("POST", "/api/notes/18", ["waf.942100@body:$.items[3].text"]),
    _line("GET", "/search", refused=[("waf.931100", "query:q"), ("waf.930140", "query:q")]),
    _line("POST", "/up", refused=[("waf.too_many_parameters", "body")]),
    "not json",
]


def test_hits_come_from_findings_and_refusals_never_structural_reasons():
    reading = tuning.read_hits(LOG)
    assert (reading.lines, reading.skipped) == (5, 1)
    assert sorted({h.rule_id for h in reading.hits}) == ["waf.930140", "waf.931100", "waf.942100"]


def test_proposals_are_grouped_narrowly_with_hit_counts():
    proposals = tuning.propose(tuning.read_hits(LOG).hits)
    assert [(p.location, p.path, p.methods, p.hits) for p in proposals] == [
        ("body:$.items[*", "/api/notes", ("POST",), 2),
        ("query:q", "/search", ("GET",), 2),
    ]
    assert tuning.propose(tuning.read_hits(LOG).hits, min_hits=3) == []


def test_identifier_segments_end_the_path_prefix():
    assert tuning.path_prefix("/orders/17/items") == "/orders"
    assert tuning.path_prefix("/u/0f8fad5b-d9cb-469f-a165-70867728950e") == "/u"
    assert tuning.path_prefix("/docs/guide") == "/docs/guide"
    assert tuning.location_pattern("body:$.a[12].b") == "body:$.a[*"
    assert tuning.location_pattern('body:$["x y"]') == 'body:$["x y"]'


def test_the_patch_is_a_valid_policy_that_silences_what_was_seen():
    patch = tuning.render_patch(tuning.propose(tuning.read_hits(LOG).hits))
    assert "# 2 hits: waf.931100 x1, waf.930140 x1" in patch
    exceptions = yaml.safe_load(patch)["waf"]["exceptions"]
    tuned = waf(exceptions=exceptions)
    after, request = run(tuned, "/search?q=http://203.0.113.9/a")
    assert after is None
    other, _ = run(tuned, "/other?q=1' OR '1'='1")
    assert other is not None  # nothing beyond the seen place is excepted
    assert request.findings == [] or all(f.location == "query:q" for f in request.findings)
