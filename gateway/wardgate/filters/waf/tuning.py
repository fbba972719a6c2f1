"""``wardgate tune``: read the access log of a detect-mode rollout, propose the narrowest WAF
exceptions that would have let that traffic through, as a policy patch for review in Git.

Input: ECS access-log lines (``--access-log ecs``, the default). A WAF match is taken from
``wardgate.detected`` (``waf.942100@query:q``: findings of detect mode, and weak signals that
stood alone) and, for requests the WAF refused, from the parallel ``wardgate.rule_ids`` /
``wardgate.locations`` lists. Structural refusals (``waf.too_many_parameters``) are not
rule matches and never become exceptions. Other lines are skipped and counted.

Output: one exception per (location, path prefix, method set) with every rule seen there,
the hit count in a comment, a ``reason`` to edit, and ids written as the refusals name them
(``waf.942100``, accepted by ``exceptions[].ruleIds``). Path prefixes end before the first
segment that looks like an identifier (digits, a UUID, a long hex string), so ``/orders/17``
and ``/orders/18`` give ``/orders``. JSON array indices in locations become a prefix
(``body:$.items[*``). The patch is validated against the policy schema before it is printed.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import yaml

from wardgate.config.waf import WafSpec

_HEX = frozenset("0123456789abcdefABCDEF-")


@dataclass(frozen=True, slots=True)
class Hit:
    """One rule match in one logged request (never a value: the log has none)."""

    rule_id: str
    location: str
    path: str
    method: str


@dataclass(slots=True)
class Reading:
    """What :func:`read_hits` found in a log."""

    hits: list[Hit] = field(default_factory=list)
    lines: int = 0
    skipped: int = 0


def read_hits(lines: Iterable[str]) -> Reading:
    """Every WAF rule match in ECS access-log ``lines`` (other lines are counted, skipped)."""
    reading = Reading()
    for line in lines:
        if not line.strip():
            continue
        reading.lines += 1
        try:
            doc = json.loads(line)
        except ValueError:
            reading.skipped += 1
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("wardgate"), dict):
            reading.skipped += 1
            continue
        gw = doc["wardgate"]
        path = str(doc.get("url.path") or "/")
        method = str(doc.get("http.request.method") or "GET")
        pairs: list[tuple[str, str]] = []
        for finding in gw.get("detected") or ():
            rule_id, sep, location = str(finding).partition("@")
            if sep:
                pairs.append((rule_id, location))
        if gw.get("replied_by") == "waf":
            pairs.extend(
                zip(
                    (str(r) for r in gw.get("rule_ids") or ()),
                    (str(loc) for loc in gw.get("locations") or ()),
                    strict=False,
                )
            )
        for rule_id, location in pairs:
            if _is_rule(rule_id):
                reading.hits.append(Hit(rule_id, location, path, method))
    return reading


def _is_rule(rule_id: str) -> bool:
    bare = rule_id.removeprefix("waf.")
    return rule_id.startswith("waf.") and len(bare) == 6 and bare.isdigit()


def path_prefix(path: str) -> str:
    """The path up to (not including) its first identifier-like segment."""
    kept: list[str] = []
    for segment in path.split("/")[1:]:
        if not segment or _identifier(segment):
            break
        kept.append(segment)
    return "/" + "/".join(kept) if kept else "/"


def _identifier(segment: str) -> bool:
    if segment.isdigit():
        return True
    return (
        len(segment) >= 8 and all(c in _HEX for c in segment) and any(c.isdigit() for c in segment)
    )


def location_pattern(location: str) -> str:
    """``body:$.items[3].name`` -> ``body:$.items[*`` (a prefix over every element)."""
    at = location.find("[")
    while at >= 0:
        if at + 1 < len(location) and location[at + 1].isdigit():
            return location[: at + 1] + "*"
        at = location.find("[", at + 1)
    return location


@dataclass(slots=True)
class Proposal:
    """One proposed exception and the hits behind it."""

    location: str
    path: str
    methods: tuple[str, ...]
    rules: Counter[str]

    @property
    def hits(self) -> int:
        return sum(self.rules.values())

    def document(self) -> dict[str, object]:
        entry: dict[str, object] = {
            "ruleIds": sorted(self.rules),
            "locations": [self.location],
        }
        if self.path != "/":
            entry["paths"] = [self.path]
        entry["methods"] = list(self.methods)
        entry["reason"] = "TODO: why this is safe (proposed by wardgate tune)"
        return entry


def propose(hits: Iterable[Hit], min_hits: int = 1) -> list[Proposal]:
    """Group hits into the narrowest exceptions: per location pattern and path prefix, the
    methods seen and every rule seen there, most hits first; groups with fewer than
    ``min_hits`` hits are left out (a one-off is better investigated than excepted)."""
    groups: dict[tuple[str, str], tuple[set[str], Counter[str]]] = defaultdict(
        lambda: (set(), Counter())
    )
    for hit in hits:
        methods, rules = groups[(location_pattern(hit.location), path_prefix(hit.path))]
        methods.add(hit.method)
        rules[hit.rule_id] += 1
    proposals = [
        Proposal(location, path, tuple(sorted(methods)), rules)
        for (location, path), (methods, rules) in groups.items()
    ]
    proposals = [p for p in proposals if p.hits >= min_hits]
    proposals.sort(key=lambda p: (-p.hits, p.location, p.path))
    return proposals


def render_patch(proposals: list[Proposal]) -> str:
    """The proposals as a ``waf.exceptions`` policy patch (YAML with a hit-count comment per
    entry), checked against the policy schema."""
    entries = [p.document() for p in proposals]
    WafSpec.model_validate({"exceptions": entries})  # raises on anything the schema refuses
    lines = ["# Proposed by `wardgate tune`: review, fill in each reason, merge into waf:", "waf:"]
    lines.append("  exceptions:" if entries else "  exceptions: []")
    for proposal, entry in zip(proposals, entries, strict=True):
        counts = ", ".join(f"{rule} x{n}" for rule, n in proposal.rules.most_common())
        lines.append(f"    # {proposal.hits} hits: {counts}")
        body = yaml.safe_dump([entry], sort_keys=False, default_flow_style=None, width=100)
        lines.extend("    " + row for row in body.rstrip("\n").split("\n"))
    return "\n".join(lines) + "\n"
