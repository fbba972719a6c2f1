"""The baseline merge: never weaker than the baseline, never weaker than the app; clamps
vs violations; exceptions only where delegated; order does not matter."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wardgate.config import PolicySpec
from wardgate.config.baseline import DelegableExceptionSpec, SecurityBaselineSpec, WafFloorSpec
from wardgate.config.baseline_merge import (
    MODE_RANK,
    WAF_FAMILIES,
    apply_baselines,
    clamp_waf,
    exception_delegated,
)

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]
LIMIT_BOUNDS = {
    "maxRequestHeadersKb": (1, 60),
    "maxHeadersCount": (1, 1000),
    "maxHeaderValueBytes": (64, 61440),
    "maxUrlBytes": (64, 61440),
    "maxRequestBodyBytes": (0, 10**9),
}


def policy(doc: dict[str, Any]) -> PolicySpec:
    return PolicySpec.model_validate(doc)


def baseline(doc: dict[str, Any]) -> SecurityBaselineSpec:
    return SecurityBaselineSpec.model_validate(doc)


# --- examples --------------------------------------------------------------------------


def test_explicit_weaker_limit_is_a_violation_and_is_clamped():
    app = policy({"limits": {"maxUrlBytes": 20000}})
    outcome = apply_baselines(app, [("prod", baseline({"limits": {"maxUrlBytes": 4096}}))])
    assert outcome.effective is not None
    assert outcome.effective.limits.max_url_bytes == 4096
    assert [(f.kind, f.path, f.baseline) for f in outcome.findings] == [
        ("violation", "limits.maxUrlBytes", "prod")
    ]
    assert "20000 is over the maximum 4096" in str(outcome.findings[0])
    assert not outcome.compliant


def test_default_above_the_ceiling_is_a_clamp_not_a_violation():
    outcome = apply_baselines(policy({}), [("prod", baseline({"limits": {"maxUrlBytes": 4096}}))])
    assert outcome.effective is not None and outcome.effective.limits.max_url_bytes == 4096
    assert [f.kind for f in outcome.findings] == ["clamp"]
    assert outcome.compliant


def test_stricter_app_value_is_kept_and_no_finding():
    app = policy({"limits": {"maxUrlBytes": 1024}})
    outcome = apply_baselines(app, [("prod", baseline({"limits": {"maxUrlBytes": 4096}}))])
    assert outcome.effective is not None and outcome.effective.limits.max_url_bytes == 1024
    assert outcome.findings == ()


def test_methods_are_intersected_and_empty_intersection_is_unenforceable():
    base = baseline({"limits": {"allowedMethods": ["GET", "POST"]}})
    ok = apply_baselines(policy({"limits": {"allowedMethods": ["GET", "DELETE"]}}), [("b", base)])
    assert ok.effective is not None and ok.effective.limits.allowed_methods == ("GET",)
    assert ok.findings[0].kind == "violation"
    none = apply_baselines(policy({"limits": {"allowedMethods": ["DELETE"]}}), [("b", base)])
    assert none.effective is None
    assert [f.kind for f in none.findings] == ["unenforceable"]


def test_baseline_defaults_fill_unset_fields_but_the_app_wins():
    base = baseline({"defaults": {"limits": {"maxUrlBytes": 2048, "maxHeadersCount": 50}}})
    app = policy({"limits": {"maxUrlBytes": 1024}})
    outcome = apply_baselines(app, [("b", base)])
    assert outcome.effective is not None
    assert outcome.effective.limits.max_url_bytes == 1024
    assert outcome.effective.limits.max_headers_count == 50
    assert outcome.findings == ()


def test_defaults_are_still_clamped_by_every_ceiling():
    defaults = baseline({"defaults": {"limits": {"maxUrlBytes": 30000}}})
    ceiling = baseline({"limits": {"maxUrlBytes": 4096}})
    outcome = apply_baselines(policy({}), [("a-defaults", defaults), ("b-ceiling", ceiling)])
    assert outcome.effective is not None and outcome.effective.limits.max_url_bytes == 4096


def test_mandatory_jwt_without_provider_is_unenforceable():
    outcome = apply_baselines(policy({}), [("auth", baseline({"jwt": {"required": True}}))])
    assert outcome.effective is None
    assert outcome.findings[0].path == "jwt"
    assert "mandatory" in outcome.findings[0].message


def test_waf_floors_depend_on_the_waf_section_existing():
    base = baseline({"waf": {"minimumParanoiaLevel": 2}})
    outcome = apply_baselines(policy({}), [("b", base)])
    if "waf" in PolicySpec.model_fields:
        assert outcome.effective is not None
        assert outcome.effective.model_dump(by_alias=True)["waf"]["paranoiaLevel"] >= 2
    else:
        # Fail closed: a floor the gateway cannot enforce is never silently dropped.
        assert outcome.effective is None
        assert outcome.findings[0].kind == "unenforceable"


def test_baseline_spec_rejects_unknown_fields_and_bad_selectors():
    with pytest.raises(ValueError, match="minimumParanoiaLevel"):
        baseline({"waf": {"minimumParanoiaLevel": 5}})
    with pytest.raises(ValueError, match="needs at least one value"):
        baseline({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}})
    with pytest.raises(ValueError, match="extra"):
        baseline({"limits": {"maxUrlByte": 10}})


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ({}, {}, True),
        ({"matchLabels": {"tier": "prod"}}, {"tier": "prod"}, True),
        ({"matchLabels": {"tier": "prod"}}, {"tier": "dev"}, False),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]},
            {"tier": "b"},
            True,
        ),
        ({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]},
            {"tier": "a"},
            False,
        ),
        ({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, {"x": ""}, True),
        ({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, {"x": "1"}, False),
    ],
)
def test_namespace_selector(selector, labels, expected):
    assert baseline({"namespaceSelector": selector}).namespace_selector.matches(labels) is expected


# --- WAF on the document level ---------------------------------------------------------


def _clamp(waf: dict[str, Any], floor: dict[str, Any], delegable=()) -> list[tuple[str, str]]:
    notes: list[tuple[str, str]] = []
    clamp_waf(
        waf,
        WafFloorSpec.model_validate(floor),
        [DelegableExceptionSpec.model_validate(d) for d in delegable],
        lambda path, message: notes.append((".".join(path), message)),
    )
    return notes


def test_waf_global_and_family_floors():
    waf = {"mode": "detect", "paranoiaLevel": 1, "families": {"sqli": {"paranoiaLevel": 1}}}
    notes = _clamp(
        waf,
        {
            "minimumMode": "enforce",
            "minimumParanoiaLevel": 2,
            "families": {"sqli": {"minimumParanoiaLevel": 3}, "xss": {"minimumParanoiaLevel": 4}},
        },
    )
    assert waf["mode"] == "enforce" and waf["paranoiaLevel"] == 2
    assert waf["families"]["sqli"]["paranoiaLevel"] == 3
    assert waf["families"]["xss"] == {"paranoiaLevel": 4}
    assert {p for p, _ in notes} == {
        "waf.mode",
        "waf.paranoiaLevel",
        "waf.families.sqli.paranoiaLevel",
        "waf.families.xss.paranoiaLevel",
    }


def test_family_set_below_global_floor_is_raised():
    waf = {"mode": "enforce", "paranoiaLevel": 3, "families": {"rce": {"paranoiaLevel": 1}}}
    _clamp(waf, {"minimumParanoiaLevel": 2})
    assert waf["families"]["rce"]["paranoiaLevel"] == 2
    assert waf["paranoiaLevel"] == 3


def test_enforce_families_override_a_detect_global_mode():
    waf = {"mode": "detect", "paranoiaLevel": 1, "families": {"xss": {"mode": "off"}}}
    _clamp(waf, {"enforceFamilies": ["sqli", "xss"]})
    assert waf["mode"] == "detect"
    assert waf["families"]["sqli"]["mode"] == "enforce"
    assert waf["families"]["xss"]["mode"] == "enforce"


def test_no_floor_leaves_the_waf_section_untouched():
    waf = {"mode": "off", "paranoiaLevel": 1}
    assert _clamp(waf, {}) == []
    assert waf == {"mode": "off", "paranoiaLevel": 1}


def test_exceptions_survive_only_where_delegated():
    waf = {
        "mode": "enforce",
        "exceptions": [
            {"ruleIds": ["942100"], "paths": ["/search/x"], "reason": "fp"},
            {"ruleIds": ["942100"], "paths": ["/admin"]},
            {"families": ["php"]},
            {"families": ["sqli"]},
            {"paths": ["/search"]},
        ],
    }
    notes = _clamp(waf, {}, [{"ruleIds": ["942100"], "paths": ["/search"]}, {"families": ["php"]}])
    assert waf["exceptions"] == [
        {"ruleIds": ["942100"], "paths": ["/search/x"], "reason": "fp"},
        {"families": ["php"]},
    ]
    assert len(notes) == 3
    assert all(path == "waf.exceptions" for path, _ in notes)


# --- properties ------------------------------------------------------------------------


@st.composite
def limits_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, (lo, hi) in LIMIT_BOUNDS.items():
        if draw(st.booleans()):
            doc[key] = draw(st.integers(lo, hi))
    if draw(st.booleans()):
        doc["allowedMethods"] = draw(st.lists(st.sampled_from(METHODS), min_size=1, unique=True))
    return doc


@st.composite
def ceilings(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, (lo, hi) in LIMIT_BOUNDS.items():
        if draw(st.booleans()):
            doc[key] = draw(st.integers(max(lo, 1) if key != "maxRequestBodyBytes" else 0, hi))
    if draw(st.booleans()):
        doc["allowedMethods"] = draw(st.lists(st.sampled_from(METHODS), min_size=1, unique=True))
    return doc


def _limits(spec: PolicySpec) -> dict[str, Any]:
    return spec.limits.model_dump(by_alias=True)


def _never_weaker(effective: dict[str, Any], reference: dict[str, Any]) -> None:
    for key in LIMIT_BOUNDS:
        if reference.get(key) is not None:
            assert effective[key] <= reference[key], key
    if reference.get("allowedMethods") is not None:
        assert set(effective["allowedMethods"]) <= set(reference["allowedMethods"])


@settings(max_examples=150, deadline=None)
@given(app_doc=limits_docs(), ceiling_docs=st.lists(ceilings(), min_size=1, max_size=3))
def test_effective_limits_never_weaker_than_app_or_any_baseline(app_doc, ceiling_docs):
    app = policy({"limits": app_doc})
    bases = [(f"b{i}", baseline({"limits": c})) for i, c in enumerate(ceiling_docs)]
    outcome = apply_baselines(app, bases)
    if outcome.effective is None:
        # Only an empty method intersection makes limits unenforceable.
        methods = set(_limits(app)["allowedMethods"])
        for c in ceiling_docs:
            methods &= set(c.get("allowedMethods", METHODS))
        assert not methods
        return
    effective = _limits(outcome.effective)
    _never_weaker(effective, _limits(app))
    for c in ceiling_docs:
        _never_weaker(effective, c)
    # Never stricter than needed: each value is the app's or one of the ceilings.
    for key in LIMIT_BOUNDS:
        candidates = {_limits(app)[key]} | {c[key] for c in ceiling_docs if key in c}
        assert effective[key] == min(candidates)


@settings(max_examples=100, deadline=None)
@given(app_doc=limits_docs(), first=ceilings(), second=ceilings())
def test_merge_is_order_independent_and_composes(app_doc, first, second):
    app = policy({"limits": app_doc})
    a, b = ("a", baseline({"limits": first})), ("b", baseline({"limits": second}))
    both = apply_baselines(app, [a, b])
    assert both.effective == apply_baselines(app, [b, a]).effective
    step = apply_baselines(app, [a]).effective
    if step is not None and both.effective is not None:
        # meet(meet(app, a), b) == meet(app, a, b) on every limit
        assert _limits(apply_baselines(step, [b]).effective) == _limits(both.effective)


@settings(max_examples=100, deadline=None)
@given(app_doc=limits_docs(), ceiling=ceilings())
def test_merge_is_idempotent(app_doc, ceiling):
    base = ("b", baseline({"limits": ceiling}))
    once = apply_baselines(policy({"limits": app_doc}), [base]).effective
    if once is None:
        return
    twice = apply_baselines(once, [base])
    assert twice.effective == once
    assert [f for f in twice.findings if f.kind != "clamp"] == []


MODES = ["off", "detect", "enforce"]


@st.composite
def waf_docs(draw: st.DrawFn) -> dict[str, Any]:
    families = {}
    for family in draw(st.lists(st.sampled_from(WAF_FAMILIES), unique=True, max_size=5)):
        entry = {}
        if draw(st.booleans()):
            entry["mode"] = draw(st.sampled_from(MODES))
        if draw(st.booleans()):
            entry["paranoiaLevel"] = draw(st.integers(1, 4))
        families[family] = entry
    exceptions = draw(
        st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "ruleIds": st.lists(st.sampled_from(["1", "2", "3"]), max_size=2),
                    "families": st.lists(st.sampled_from(WAF_FAMILIES[:4]), max_size=2),
                    "paths": st.lists(st.sampled_from(["/a", "/a/b", "/c"]), max_size=2),
                },
            ),
            max_size=4,
        )
    )
    return {
        "mode": draw(st.sampled_from(MODES)),
        "paranoiaLevel": draw(st.integers(1, 4)),
        "families": families,
        "exceptions": exceptions,
    }


@st.composite
def waf_floors(draw: st.DrawFn) -> dict[str, Any]:
    floor: dict[str, Any] = {}
    if draw(st.booleans()):
        floor["minimumMode"] = draw(st.sampled_from(MODES))
    if draw(st.booleans()):
        floor["minimumParanoiaLevel"] = draw(st.integers(1, 4))
    floor["enforceFamilies"] = draw(
        st.lists(st.sampled_from(WAF_FAMILIES), unique=True, max_size=3)
    )
    floor["families"] = {
        f: {"minimumParanoiaLevel": draw(st.integers(1, 4))}
        for f in draw(st.lists(st.sampled_from(WAF_FAMILIES), unique=True, max_size=3))
    }
    return floor


def _effective_family(waf: dict[str, Any], family: str) -> tuple[int, int]:
    entry = waf.get("families", {}).get(family, {})
    mode = entry.get("mode") or waf["mode"]
    level = entry.get("paranoiaLevel") or waf["paranoiaLevel"]
    return MODE_RANK[mode], level


delegations = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "ruleIds": st.lists(st.sampled_from(["1", "2", "3"]), max_size=3),
            "families": st.lists(st.sampled_from(WAF_FAMILIES[:4]), max_size=3),
            "paths": st.lists(st.sampled_from(["/a", "/c"]), max_size=1),
        },
    ),
    max_size=3,
)


@settings(max_examples=200, deadline=None)
@given(waf=waf_docs(), floor=waf_floors(), delegable=delegations)
def test_waf_never_weaker_than_app_or_floor(waf, floor, delegable):
    original = {**waf, "families": {k: dict(v) for k, v in waf["families"].items()}}
    _clamp(waf, floor, delegable)
    floor_spec = WafFloorSpec.model_validate(floor)
    specs = [DelegableExceptionSpec.model_validate(d) for d in delegable]
    delegated = {f for d in specs if not d.paths and not d.rule_ids for f in d.families}
    for family in WAF_FAMILIES:
        mode, level = _effective_family(waf, family)
        old_mode, old_level = _effective_family(original, family)
        assert mode >= old_mode and level >= old_level, family
        if family in delegated and family in original["families"]:
            # the team's own tuning of a family delegated to it stays as written
            assert waf["families"][family] == original["families"][family]
            continue
        family_floor = floor_spec.families.get(family)
        min_level = max(
            floor_spec.minimum_paranoia_level or 0,
            (family_floor.minimum_paranoia_level or 0) if family_floor else 0,
        )
        assert level >= min_level
        if floor_spec.minimum_mode:
            assert mode >= MODE_RANK[floor_spec.minimum_mode]
        if family in floor_spec.enforce_families:
            assert mode == MODE_RANK["enforce"]
    assert all(e in original["exceptions"] for e in waf["exceptions"])
    assert all(exception_delegated(e, specs) for e in waf["exceptions"])
    dropped = [e for e in original["exceptions"] if e not in waf["exceptions"]]
    assert not any(exception_delegated(e, specs) for e in dropped)


JWT_SECTION = {
    "providers": {
        "corp": {
            "issuer": "https://login.example.com/",
            "remoteJwks": {"httpUri": {"uri": "https://login.example.com/jwks.json"}},
        }
    },
    "rules": [{"match": {"prefix": "/"}, "requires": {"providerName": "corp"}}],
}


def test_mandatory_jwt_met_by_the_app_or_by_baseline_defaults():
    required = baseline({"jwt": {"required": True}})
    with_jwt = apply_baselines(policy({"jwt": JWT_SECTION}), [("auth", required)])
    assert with_jwt.effective is not None and with_jwt.findings == ()
    defaults = baseline({"jwt": {"required": True}, "defaults": {"jwt": JWT_SECTION}})
    from_defaults = apply_baselines(policy({}), [("auth", defaults)])
    assert from_defaults.effective is not None
    assert from_defaults.effective.jwt is not None
    assert list(from_defaults.effective.jwt.providers) == ["corp"]


def test_real_waf_section_is_clamped_end_to_end():
    app = policy(
        {
            "waf": {
                "mode": "detect",
                "anomalyThreshold": 50,
                "oversizeAction": "allowUninspected",
                "families": {"sqli": {"mode": "off"}},
                "exceptions": [
                    {"ruleIds": ["942100"], "paths": ["/search"], "reason": "fp on search"},
                    {"families": ["xss"], "paths": ["/a"], "reason": "not delegated"},
                ],
            }
        }
    )
    base = baseline(
        {
            "waf": {
                "minimumMode": "enforce",
                "families": {"sqli": {"minimumParanoiaLevel": 3}},
                "maximumAnomalyThreshold": 10,
                "requireOversizeReject": True,
            },
            "delegableExceptions": [{"ruleIds": ["942100"], "paths": ["/search"]}],
        }
    )
    outcome = apply_baselines(app, [("prod", base)])
    assert outcome.effective is not None
    waf = outcome.effective.waf
    assert waf.mode == "enforce" and waf.anomaly_threshold == 10
    assert waf.oversize_action == "reject"
    assert waf.families["sqli"].mode == "enforce"
    assert waf.families["sqli"].paranoia_level == 3
    assert [e.rule_ids for e in waf.exceptions] == [("942100",)]
    kinds = {f.path: f.kind for f in outcome.findings}
    assert kinds["waf.mode"] == "violation"
    assert kinds["waf.anomalyThreshold"] == "violation"
    assert kinds["waf.oversizeAction"] == "violation"
    assert kinds["waf.families.sqli.paranoiaLevel"] == "clamp"
    assert kinds["waf.exceptions"] == "violation"
    # the result compiles with the gateway's own compiler (what the sidecar will load)
    from wardgate.runtime import compile_policy

    compile_policy(outcome.effective)


def test_family_delegated_everywhere_may_be_switched_off_by_the_app():
    base = baseline(
        {"waf": {"minimumMode": "enforce"}, "delegableExceptions": [{"families": ["php"]}]}
    )
    app = policy(
        {"waf": {"mode": "detect", "families": {"php": {"mode": "off"}, "sqli": {"mode": "off"}}}}
    )
    outcome = apply_baselines(app, [("prod", base)])
    assert outcome.effective is not None
    waf = outcome.effective.waf
    assert waf.families["php"].mode == "off"  # delegated
    assert waf.families["sqli"].mode == "enforce"  # not delegated: raised
    assert waf.mode == "enforce"
    # a second baseline that does not delegate php wins (the stricter one)
    strict = baseline({"waf": {"minimumMode": "detect"}})
    both = apply_baselines(app, [("prod", base), ("strict", strict)])
    assert both.effective is not None and both.effective.waf.families["php"].mode == "detect"
    assert apply_baselines(app, [("strict", strict), ("prod", base)]).effective == both.effective
