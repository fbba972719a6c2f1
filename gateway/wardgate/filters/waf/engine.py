"""The rule engine: rules compiled into Hyperscan databases, one pass per target.

Rules sharing a transformation pipeline form a *group*; each group is one Hyperscan
database (every ``rx`` pattern, every ``pm`` phrase and every operator prefilter of the
group's rules), so a target is transformed once per pipeline and scanned once per group.
Pipelines share prefixes (``urlDecodeUni`` → ``htmlEntityDecode`` → ...), computed once per
target along a small tree. ``detectSQLi``/``detectXSS`` call libinjection on the group's
transformed value, only where their prefilter matched.

Compiling is the expensive part (Hyperscan builds automata); :func:`engine_for` keeps the
engines of recent rule selections, so a reload that changes no rule reuses the compiled
databases. An :class:`Engine` is immutable; Hyperscan scratch space is per thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import hyperscan
import libinjection

from wardgate.filters.api import FilterCompileError
from wardgate.filters.waf.rules import Rule
from wardgate.filters.waf.targets import Target
from wardgate.filters.waf.transforms import TRANSFORMS

_FLAGS = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_DOTALL | hyperscan.HS_FLAG_SINGLEMATCH


@dataclass(frozen=True, slots=True)
class Match:
    """A rule that matched a target. Carries the location, never the value."""

    rule: Rule
    location: str
    kind: str


def _sqli(value: str) -> bool:
    return bool(libinjection.is_sql_injection(value)["is_sqli"])


def _xss(value: str) -> bool:
    return bool(libinjection.is_xss(value)["is_xss"])


_DETECTORS: dict[str, Callable[[str], bool]] = {"detectSQLi": _sqli, "detectXSS": _xss}


def _escape_bytes(phrase: str) -> bytes:
    return b"".join(
        bytes([b]) if chr(b).isalnum() else b"\\x%02x" % b for b in phrase.encode("utf-8")
    )


@dataclass(slots=True)
class _Group:
    """Rules sharing one transformation pipeline."""

    node: int
    database: hyperscan.Database | None
    expressions: tuple[tuple[Rule, bool], ...]
    """Per Hyperscan id: the rule and whether the id is its prefilter (a gate)."""
    detectors: tuple[tuple[Rule, int | None], ...]
    """libinjection rules and the id of their prefilter (``None``: always run)."""
    kinds: frozenset[str]


class Engine:
    """Compiled rules. :meth:`scan` returns every rule that matched, with its location."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        # Transformation tree: node 0 is the raw value.
        self._nodes: list[tuple[int, Callable[[str], str]]] = [(0, TRANSFORMS["none"])]
        node_of: dict[tuple[str, ...], int] = {(): 0}
        by_pipeline: dict[tuple[str, ...], list[Rule]] = {}
        for rule in self.rules:
            by_pipeline.setdefault(rule.transformations, []).append(rule)
            for i in range(1, len(rule.transformations) + 1):
                prefix = rule.transformations[:i]
                if prefix not in node_of:
                    node_of[prefix] = len(self._nodes)
                    self._nodes.append((node_of[prefix[:-1]], TRANSFORMS[prefix[-1]]))
        self._groups = [self._group(node_of[p], rs) for p, rs in by_pipeline.items()]
        # Per kind: the groups that have a rule for it, and the tree nodes they need.
        self._plan: dict[str, tuple[tuple[int, ...], tuple[_Group, ...]]] = {}
        kinds = {kind for group in self._groups for kind in group.kinds}
        for kind in kinds:
            groups = tuple(g for g in self._groups if kind in g.kinds)
            needed: set[int] = set()
            for group in groups:
                node = group.node
                while node:
                    needed.add(node)
                    node = self._nodes[node][0]
            self._plan[kind] = (tuple(sorted(needed)), groups)
        self._local = threading.local()

    def _group(self, node: int, rules: list[Rule]) -> _Group:
        patterns: list[bytes] = []
        expressions: list[tuple[Rule, bool]] = []
        detectors: list[tuple[Rule, int | None]] = []
        for rule in rules:
            if rule.operator == "rx":
                patterns.append(rule.pattern.encode())
                expressions.append((rule, False))
            elif rule.operator == "pm":
                for phrase in rule.phrases:
                    patterns.append(_escape_bytes(phrase))
                    expressions.append((rule, False))
            else:
                gate: int | None = None
                if rule.prefilter:
                    gate = len(patterns)
                    patterns.append(rule.prefilter.encode())
                    expressions.append((rule, True))
                detectors.append((rule, gate))
        database = None
        if patterns:
            database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            try:
                database.compile(
                    expressions=patterns,
                    ids=list(range(len(patterns))),
                    elements=len(patterns),
                    flags=[_FLAGS] * len(patterns),
                )
            except hyperscan.error:
                raise FilterCompileError(_find_bad_patterns(patterns, expressions)) from None
        return _Group(
            node=node,
            database=database,
            expressions=tuple(expressions),
            detectors=tuple(detectors),
            kinds=frozenset(k for r in rules for k in r.kinds),
        )

    def _scratches(self) -> dict[int, hyperscan.Scratch]:
        """This thread's scratch space, one per database (Hyperscan scratch must not be
        shared by concurrent scans; the binding cannot grow one for several databases)."""
        scratches: dict[int, hyperscan.Scratch] | None = getattr(self._local, "scratch", None)
        if scratches is None:
            scratches = {
                id(group): hyperscan.Scratch(group.database)
                for group in self._groups
                if group.database is not None
            }
            self._local.scratch = scratches
        return scratches

    def scan(self, targets: Iterable[Target]) -> list[Match]:
        """Every (rule, target) match, in target order; a rule matching several targets
        appears once per target."""
        scratches = self._scratches()
        matches: list[Match] = []
        nodes = self._nodes
        hit: set[int] = set()

        def on_match(expr: int, _start: int, _end: int, _flags: int, _ctx: object) -> None:
            hit.add(expr)

        for target in targets:
            plan = self._plan.get(target.kind)
            if plan is None or not target.value:
                continue
            needed, groups = plan
            values: dict[int, str] = {0: target.value}
            for node in needed:
                parent, transform = nodes[node]
                values[node] = transform(values[parent])
            for group in groups:
                value = values[group.node]
                hit.clear()
                if group.database is not None:
                    group.database.scan(
                        value.encode("utf-8", "surrogatepass"),
                        match_event_handler=on_match,
                        scratch=scratches[id(group)],
                    )
                for expr in sorted(hit):
                    rule, is_gate = group.expressions[expr]
                    if not is_gate and self._applies(rule, target):
                        matches.append(Match(rule, target.location, target.kind))
                for rule, gate in group.detectors:
                    if gate is not None and gate not in hit:
                        continue
                    if self._applies(rule, target) and _DETECTORS[rule.operator](value):
                        matches.append(Match(rule, target.location, target.kind))
        return matches

    @staticmethod
    def _applies(rule: Rule, target: Target) -> bool:
        return target.kind in rule.kinds and rule.applies_to(target.kind, target.name)


def _find_bad_patterns(patterns: list[bytes], expressions: list[tuple[Rule, bool]]) -> list[str]:
    problems = []
    for pattern, (rule, is_gate) in zip(patterns, expressions, strict=True):
        try:
            hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK).compile(
                expressions=[pattern], flags=[_FLAGS]
            )
        except hyperscan.error as exc:
            field = "prefilter" if is_gate else "pattern"
            problems.append(f"waf rule {rule.id}.{field}: {exc}")
    return problems or ["waf: the rule set does not compile"]


_CACHE: OrderedDict[tuple[str, ...], Engine] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 8


def engine_for(rules: Sequence[Rule]) -> Engine:
    """The compiled engine for exactly these rules (cached: rule objects are immutable and
    come from the package, so equal id selections compile to equal engines)."""
    key = tuple(rule.id for rule in rules)
    with _CACHE_LOCK:
        engine = _CACHE.get(key)
        if engine is not None:
            _CACHE.move_to_end(key)
            return engine
    engine = Engine(rules)
    with _CACHE_LOCK:
        _CACHE[key] = engine
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return engine
