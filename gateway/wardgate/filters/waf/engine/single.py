"""Scanning one target at a time: small requests, and the fallback of :mod:`.batch`.

Per value the scan does as few database scans as it can. Each needed tree node transforms
the value once (a plain value skips the transformations that cannot change it); groups whose
pipeline left the value unchanged share one scan of the union (broad groups) and one of the
kind's narrow database; broad groups whose pipelines produced the same new text share one
union scan of that text; every other group scans its own database. libinjection judges a
value only where its prefilter matched, and each distinct value once per scan.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import hyperscan

from wardgate.filters.waf.engine.plan import Group, KindPlan, Plan, SharedDatabase
from wardgate.filters.waf.rules import Rule
from wardgate.filters.waf.targets import Target
from wardgate.filters.waf.transforms import is_plain

SHARED_TEXT_MAX = 4096
"""Up to this length, one union scan of a transformed text shared by several groups is
cheaper than a scan per group; on longer texts the small databases scan faster."""

Hits = dict[int, set[int]]
"""Group index -> the group-local ids that matched."""


def rules_each(
    plan: Plan,
    targets: Sequence[Target],
    verdicts: dict[tuple[str, str], bool],
    scratches: dict[int, hyperscan.Scratch],
) -> list[list[Rule]]:
    """The rules that match each target, in target order and, per target, in group and id
    order. ``verdicts`` carries libinjection answers between calls of one scan."""
    return _OneByOne(plan, verdicts, scratches).run(targets)


class _OneByOne:
    """The state of one :func:`rules_each` call."""

    __slots__ = ("_found", "_nodes", "_plan", "_scratches", "_union", "_verdicts")

    def __init__(
        self,
        plan: Plan,
        verdicts: dict[tuple[str, str], bool],
        scratches: dict[int, hyperscan.Scratch],
    ) -> None:
        self._plan = plan
        self._nodes = plan.nodes
        self._union = plan.union
        self._verdicts = verdicts
        self._scratches = scratches
        self._found: list[int] = []

    def _on_match(self, expr: int, _start: int, _end: int, _flags: int, _ctx: object) -> None:
        self._found.append(expr)

    def _scan(self, database: hyperscan.Database, data: bytes) -> list[int]:
        """The ids ``database`` matched in ``data`` (valid until the next scan)."""
        found = self._found
        found.clear()
        scratch = self._scratches[id(database)]
        database.scan(data, match_event_handler=self._on_match, scratch=scratch)
        return found

    def _scan_shared(self, shared: SharedDatabase, data: bytes, hits: Hits) -> None:
        """Scan a shared database; add its hits to ``hits`` by owning group."""
        owners = shared.owners
        for expr in self._scan(shared.database, data):
            group, local = owners[expr]
            hits.setdefault(group.index, set()).add(local)

    def run(self, targets: Sequence[Target]) -> list[list[Rule]]:
        kinds = self._plan.kinds
        answers: list[list[Rule]] = []
        for target in targets:
            kind_plan = kinds.get(target.kind)
            if kind_plan is None or not target.value:
                answers.append([])
            else:
                answers.append(self._target(kind_plan, target))
        return answers

    def _transformed(self, kind_plan: KindPlan, raw: str) -> tuple[dict[int, str], bool]:
        """The value at every node the kind needs, and whether every one is ``raw`` itself
        (transformations return their input when they change nothing)."""
        nodes = self._nodes
        if not is_plain(raw):
            values = {0: raw}
            for node in kind_plan.needed:
                entry = nodes[node]
                values[node] = entry.transform(values[entry.parent])
            return values, False
        values = dict.fromkeys(kind_plan.needed, raw)
        values[0] = raw
        unchanged = True
        plain_nodes = kind_plan.plain_needed if " " in raw else kind_plan.spaceless_needed
        for node in plain_nodes:
            entry = nodes[node]
            before = values[entry.parent]
            after = values[node] = (
                before if entry.keeps_plain and before is raw else entry.transform(before)
            )
            unchanged = unchanged and after is raw
        return values, unchanged

    def _target(self, kind_plan: KindPlan, target: Target) -> list[Rule]:
        raw = target.value
        values, unchanged = self._transformed(kind_plan, raw)
        name = target.name.lower()
        fast = kind_plan.fast if unchanged else None
        hits = self._shared_hits(kind_plan, values, target, name, fast is not None)
        visit: Iterable[Group]
        changed: dict[str, int] = {}
        if fast is not None:
            # Every pipeline left the value as it was: the shared scans answered for all
            # groups, and only the groups they hit need a look.
            visit = [fast.groups[i] for i in sorted(hits) if i in fast.groups]
        else:
            visit = kind_plan.groups
            changed = _changed_texts(kind_plan.groups, values, raw)
        rules_hit: list[Rule] = []
        by_text: dict[str, Hits] = {}
        for group in visit:
            value = values[group.node]
            # Answered by a shared scan (an empty database never runs one).
            shared = value is raw and (group.broad or bool(group.patterns))
            if shared and group.index not in hits and not group.ungated:
                continue  # nothing matched and no detector runs unconditionally
            only = group.names.get(target.kind)
            if only is not None and name not in only:
                continue
            if shared:
                found = hits.get(group.index, set())
            elif group.broad and changed.get(value, 0) > 1 and self._union is not None:
                text_hits = by_text.get(value)
                if text_hits is None:
                    text_hits = by_text[value] = {}
                    self._scan_shared(self._union, _encode(value), text_hits)
                found = text_hits.get(group.index, set())
            elif group.database is not None:
                found = set(self._scan(group.database, _encode(value)))
            else:
                found = set()
            self._collect(group, target, value, found, rules_hit)
        return rules_hit

    def _shared_hits(
        self,
        kind_plan: KindPlan,
        values: dict[int, str],
        target: Target,
        name: str,
        fast: bool,
    ) -> Hits:
        """The scans of the raw value shared by the groups whose pipeline left it as it
        was: the union (broad groups) and the kind's narrow database."""
        raw, kind = target.value, target.kind
        narrow = kind_plan.narrow_named.get(name) or kind_plan.narrow
        shared_broad = shared_narrow = False
        if fast:
            assert kind_plan.fast is not None
            shared_broad = kind_plan.fast.broad
            names = kind_plan.fast.narrow_names
            shared_narrow = narrow is not None and (names is None or name in names)
        else:
            for group in kind_plan.groups:
                if values[group.node] is raw:
                    if group.broad:
                        shared_broad = True
                    elif group.patterns and not shared_narrow:
                        only = group.names.get(kind)
                        shared_narrow = only is None or name in only
        hits: Hits = {}
        data: bytes | None = None
        if self._union is not None and shared_broad:
            data = _encode(raw)
            self._scan_shared(self._union, data, hits)
        if narrow is not None and shared_narrow:
            self._scan_shared(narrow, data if data is not None else _encode(raw), hits)
        return hits

    def _collect(
        self, group: Group, target: Target, value: str, found: set[int], out: list[Rule]
    ) -> None:
        """Append the group's rules that ``found`` (its local ids that matched ``value``)
        and its detectors make match ``target``."""
        for expr in sorted(found):
            rule, is_gate = group.expressions[expr]
            if not is_gate and applies(rule, target):
                out.append(rule)
        for detector in group.detectors:
            if detector.gate is not None and detector.gate not in found:
                continue
            if applies(detector.rule, target) and detector.judge(value, self._verdicts):
                out.append(detector.rule)


def _changed_texts(groups: Sequence[Group], values: dict[int, str], raw: str) -> dict[str, int]:
    """How many broad groups with expressions turned the value into each new text (only
    texts short enough to share a union scan: no hashing of long texts)."""
    changed: dict[str, int] = {}
    for group in groups:
        value = values[group.node]
        if group.broad and value is not raw and group.patterns and len(value) <= SHARED_TEXT_MAX:
            changed[value] = changed.get(value, 0) + 1
    return changed


def _encode(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


def applies(rule: Rule, target: Target) -> bool:
    """Whether ``rule`` looks at ``target`` at all (kind and name)."""
    return target.kind in rule.kinds and rule.applies_to(target.kind, target.name)
