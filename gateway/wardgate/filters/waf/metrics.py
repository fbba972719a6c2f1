"""WAF metrics: matches by family, rule and action, refusals by reason (bounded labels:
families and rule ids come from the shipped rule set, reasons from the code)."""

from __future__ import annotations

from prometheus_client import Counter

from wardgate.filters.waf.rules import Rule

MATCHES = Counter(
    "wardgate_waf_matches",
    "WAF rule matches by family, rule id and action (block: part of a refused request; "
    "detect: a family in detect mode; score: below the anomaly threshold).",
    ["family", "rule", "action"],
)
REFUSALS = Counter(
    "wardgate_waf_refusals",
    "Requests the WAF refused for their shape (limits, encodings, unparsable bodies).",
    ["reason"],
)


def count(rule: Rule, action: str) -> None:
    MATCHES.labels(family=rule.family.value, rule=rule.id, action=action).inc()


def count_refusal(reason: str) -> None:
    REFUSALS.labels(reason=reason).inc()
