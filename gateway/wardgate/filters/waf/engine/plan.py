"""Compiling rules into a :class:`Plan`: the frozen, named form the scan strategies follow.

- :class:`TransformNode`: the transformation tree. Pipelines share prefixes
  (``urlDecodeUni`` → ``htmlEntityDecode`` → ...), so each node is one transformation
  applied to its parent's output; node 0 is the raw value.
- :class:`Group`: rules sharing one pipeline (and, for narrow rules, one target selection),
  with one Hyperscan database of all their expressions and its batch form.
- :class:`SharedDatabase`: several groups' expressions in one database (the *union* of the
  broad groups, a kind's *narrow* groups), with the owner of every Hyperscan id.
- :class:`KindPlan`: per target kind, the groups and nodes it needs and its shortcuts.

*Broad* rules (those that look at parameters) share the union database; *narrow* ones (a
method, one header) stay out of it, or they would match every other value. Narrow rules are
grouped by the targets they select, so a value is scanned only with patterns that apply to
its kind (and name).

Everything here is immutable once built; databases are compiled while the plan is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import hyperscan

from wardgate.filters.waf.engine.databases import (
    BATCH_FLAGS,
    FLAGS,
    batch_patterns,
    compile_database,
)
from wardgate.filters.waf.operators import OPERATORS
from wardgate.filters.waf.rules import Rule
from wardgate.filters.waf.transforms import PLAIN_IDENTITY, TRANSFORMS, Transform

OWN_ENGINE_MAX_RULES = 12
"""A kind with at most this many rules, sharing groups with more than twice as many, gets an
engine of its own."""


@dataclass(frozen=True, slots=True)
class TransformNode:
    """One node of the transformation tree."""

    parent: int
    transform: Transform
    keeps_plain: bool
    """Whether the transformation never changes a plain value (:data:`PLAIN_IDENTITY`)."""


class Expression(NamedTuple):
    """What a Hyperscan id of a group stands for."""

    rule: Rule
    is_gate: bool
    """A detector's prefilter (a gate), not a match of its own."""


@dataclass(frozen=True, slots=True)
class Detector:
    """A rule whose operator judges the value with a function (libinjection)."""

    rule: Rule
    gate: int | None
    """The group-local id of its prefilter (``None``: it judges every value)."""
    detect: Callable[[str], bool]

    def judge(self, value: str, verdicts: dict[tuple[str, str], bool]) -> bool:
        """``detect(value)``, remembered in ``verdicts`` by (operator, value): it depends on
        nothing else, and a request repeats values (every element of a JSON array)."""
        key = (self.rule.operator, value)
        verdict = verdicts.get(key)
        if verdict is None:
            verdict = verdicts[key] = self.detect(value)
        return verdict


@dataclass(frozen=True, slots=True, eq=False)
class Group:
    """Rules sharing one transformation pipeline (one tree node)."""

    index: int
    node: int
    database: hyperscan.Database | None
    """Every expression of the group, one match each (``None``: no expressions)."""
    batch: hyperscan.Database | None
    """The same expressions in :func:`~.databases.separated` form, every match reported."""
    patterns: tuple[bytes, ...]
    expressions: tuple[Expression, ...]
    """Per Hyperscan id of :attr:`database`."""
    detectors: tuple[Detector, ...]
    kinds: frozenset[str]
    broad: bool
    """Whether its expressions are in the union database."""
    names: Mapping[str, frozenset[str]]
    """Per kind, the only target names any rule of the group looks at (absent: all)."""
    ungated: bool
    """Whether a detector of the group runs without a prefilter (on every value)."""


class Owner(NamedTuple):
    """Who a Hyperscan id of a shared database belongs to."""

    group: Group
    local: int
    """The id within the group's own database."""


@dataclass(frozen=True, slots=True, eq=False)
class SharedDatabase:
    """Several groups' expressions in one database."""

    database: hyperscan.Database
    owners: tuple[Owner, ...]
    """Per Hyperscan id."""


@dataclass(frozen=True, slots=True)
class FastPath:
    """For a value no pipeline of the kind changes: the shared scans answer every group."""

    broad: bool
    """Whether the union database applies (the kind has a broad group)."""
    narrow_names: frozenset[str] | None
    """The names any narrow group looks at (``None``: all)."""
    groups: Mapping[int, Group]
    """The kind's groups by index."""


@dataclass(frozen=True, slots=True)
class KindPlan:
    """What scanning a value of one kind takes."""

    groups: tuple[Group, ...]
    """The groups with a rule for the kind."""
    needed: tuple[int, ...]
    """The tree nodes those groups need, parents first."""
    plain_needed: tuple[int, ...]
    """The nodes a plain value (:func:`~wardgate.filters.waf.transforms.is_plain`) still
    has to go through: those below a transformation that may change it."""
    spaceless_needed: tuple[int, ...]
    """The same for plain values without a space: whitespace removal keeps those too."""
    fast: FastPath | None
    """``None`` when a detector of the kind runs ungated (every value needs a look)."""
    narrow: SharedDatabase | None
    """The narrow groups that look at every name of the kind, in one database."""
    narrow_batch: SharedDatabase | None
    """:attr:`narrow` in batch form."""
    named: frozenset[str]
    """The names some narrow group looks at alone (batches leave these out)."""
    narrow_named: Mapping[str, SharedDatabase]
    """Per name in :attr:`named`: every narrow group that looks at it, in one database."""


@dataclass(frozen=True, slots=True, eq=False)
class Plan:
    """Compiled rules: what :mod:`.single` and :mod:`.batch` scan with."""

    rules: tuple[Rule, ...]
    nodes: tuple[TransformNode, ...]
    groups: tuple[Group, ...]
    union: SharedDatabase | None
    """Every broad group's expressions."""
    union_batch: SharedDatabase | None
    kinds: Mapping[str, KindPlan]

    def databases(self) -> list[hyperscan.Database]:
        """Every database a scan may use (each needs its scratch space), once each."""
        found: dict[int, hyperscan.Database] = {}
        for group in self.groups:
            for db in (group.database, group.batch):
                if db is not None:
                    found[id(db)] = db
        shared = [self.union, self.union_batch]
        for kind in self.kinds.values():
            shared += [kind.narrow, kind.narrow_batch, *kind.narrow_named.values()]
        for entry in shared:
            if entry is not None:
                found[id(entry.database)] = entry.database
        return list(found.values())

    def own_kinds(self) -> dict[str, list[Rule]]:
        """Kinds that few rules look at (the raw body, the method), with their rules.

        Such a kind would otherwise go through the pipelines and databases of every rule
        sharing a group with those few: 6 transformations and 43 patterns over a 4 KiB body
        for 2 rules. A plan of just its rules finds the same matches with a fraction of the
        work."""
        result: dict[str, list[Rule]] = {}
        for kind, kind_plan in self.kinds.items():
            own = [rule for rule in self.rules if kind in rule.kinds]
            shared = sum(len(g.expressions) + len(g.detectors) for g in kind_plan.groups)
            if len(own) <= OWN_ENGINE_MAX_RULES and 2 * len(own) < shared:
                result[kind] = own
        return result


def compile_plan(rules: Sequence[Rule]) -> Plan:
    """Compile ``rules``; raises :class:`~wardgate.filters.api.FilterCompileError` naming
    each rule whose expression Hyperscan refuses."""
    nodes, pipelines = _tree(rules)
    groups = tuple(
        _group(index, node, selected, broad)
        for index, ((node, broad, _selection), selected) in enumerate(pipelines.items())
    )
    union, union_batch = _union(groups)
    kinds = _kind_plans(nodes, groups)
    return Plan(tuple(rules), nodes, groups, union, union_batch, kinds)


PipelineKey = tuple[int, bool, object]
"""(tree node, broad, target selection of a narrow rule)."""


def _tree(
    rules: Sequence[Rule],
) -> tuple[tuple[TransformNode, ...], dict[PipelineKey, list[Rule]]]:
    """The transformation tree, and the rules by pipeline key (in first-seen order)."""
    nodes = [TransformNode(0, TRANSFORMS["none"], True)]
    node_of: dict[tuple[str, ...], int] = {(): 0}
    pipelines: dict[tuple[tuple[str, ...], bool, object], list[Rule]] = {}
    for rule in rules:
        broad = "ARGS" in rule.kinds
        selection = None if broad else (rule.kinds, rule.only_names)
        pipelines.setdefault((rule.transformations, broad, selection), []).append(rule)
        for i in range(1, len(rule.transformations) + 1):
            prefix = rule.transformations[:i]
            if prefix not in node_of:
                node_of[prefix] = len(nodes)
                nodes.append(
                    TransformNode(
                        node_of[prefix[:-1]], TRANSFORMS[prefix[-1]], prefix[-1] in PLAIN_IDENTITY
                    )
                )
    keyed = {(node_of[p], broad, sel): rs for (p, broad, sel), rs in pipelines.items()}
    return tuple(nodes), keyed


def _group(index: int, node: int, rules: list[Rule], broad: bool) -> Group:
    patterns: list[bytes] = []
    expressions: list[Expression] = []
    detectors: list[Detector] = []
    for rule in rules:
        operator = OPERATORS[rule.operator]
        if operator.compile is not None:
            for pattern in operator.compile(rule.pattern, rule.phrases):
                patterns.append(pattern)
                expressions.append(Expression(rule, False))
        elif operator.detect is not None:
            gate: int | None = None
            if rule.prefilter:
                gate = len(patterns)
                patterns.append(rule.prefilter.encode())
                expressions.append(Expression(rule, True))
            detectors.append(Detector(rule, gate, operator.detect))
    return Group(
        index=index,
        node=node,
        database=compile_database(patterns, expressions) if patterns else None,
        batch=compile_database(batch_patterns(patterns), expressions, BATCH_FLAGS)
        if patterns
        else None,
        patterns=tuple(patterns),
        expressions=tuple(expressions),
        detectors=tuple(detectors),
        kinds=frozenset(k for r in rules for k in r.kinds),
        broad=broad,
        names=_names_by_kind(rules),
        ungated=any(d.gate is None for d in detectors),
    )


def _names_by_kind(rules: Sequence[Rule]) -> dict[str, frozenset[str]]:
    """For each kind where every rule is narrowed to names, the union of those names."""
    result: dict[str, frozenset[str]] = {}
    for kind in {k for r in rules for k in r.kinds}:
        names: set[str] = set()
        for rule in rules:
            if kind not in rule.kinds:
                continue
            only = dict(rule.only_names).get(kind)
            if only is None:
                break
            names |= only
        else:
            result[kind] = frozenset(names)
    return result


def _shared(groups: Sequence[Group], batch: bool) -> SharedDatabase:
    """One database of every expression of ``groups``."""
    owners = tuple(Owner(g, i) for g in groups for i in range(len(g.patterns)))
    patterns = [o.group.patterns[o.local] for o in owners]
    expressions = [o.group.expressions[o.local] for o in owners]
    if batch:
        return SharedDatabase(
            compile_database(batch_patterns(patterns), expressions, BATCH_FLAGS), owners
        )
    return SharedDatabase(compile_database(patterns, expressions, FLAGS), owners)


def _union(groups: Sequence[Group]) -> tuple[SharedDatabase | None, SharedDatabase | None]:
    """Besides one database per group, a *union* of every broad group's expressions: most
    values (plain words, numbers, tokens) come out of every pipeline unchanged, and then one
    scan of the union answers for all broad groups at once."""
    broad = [g for g in groups if g.broad and g.patterns]
    if not broad:
        return None, None
    return _shared(broad, batch=False), _shared(broad, batch=True)


def _kind_plans(nodes: tuple[TransformNode, ...], groups: tuple[Group, ...]) -> dict[str, KindPlan]:
    narrow_cache: dict[tuple[tuple[int, ...], bool], SharedDatabase] = {}

    def narrow(selection: tuple[Group, ...], batch: bool) -> SharedDatabase:
        # Kinds with the same narrow groups share the database.
        key = (tuple(g.index for g in selection), batch)
        compiled = narrow_cache.get(key)
        if compiled is None:
            compiled = narrow_cache[key] = _shared(selection, batch)
        return compiled

    keeps = _keeps(nodes, spaceless=False)
    keeps_spaceless = _keeps(nodes, spaceless=True)
    plans: dict[str, KindPlan] = {}
    for kind in {kind for group in groups for kind in group.kinds}:
        selected = tuple(g for g in groups if kind in g.kinds)
        needed: set[int] = set()
        for group in selected:
            node = group.node
            while node:
                needed.add(node)
                node = nodes[node].parent
        ordered = tuple(sorted(needed))
        # A kind's narrow groups share one database too: a header value then takes one
        # scan for every narrow rule whose pipeline left it unchanged instead of one per
        # rule selection. Groups that look only at some names (``content-length``) are
        # left out and get one per name with them in: their patterns (``[^0-9]``) would
        # match almost every other value, a hit per value in a batch, then dropped.
        narrow_groups = tuple(g for g in selected if not g.broad and g.patterns)
        generic = tuple(g for g in narrow_groups if g.names.get(kind) is None)
        named = frozenset(
            name
            for g in selected
            if not g.broad and g.names.get(kind) is not None
            for name in g.names[kind]
        )
        narrow_named: dict[str, SharedDatabase] = {}
        for name in named:
            for_name = tuple(
                g for g in narrow_groups if name in g.names.get(kind, frozenset({name}))
            )
            if for_name:
                narrow_named[name] = narrow(for_name, batch=False)
        plans[kind] = KindPlan(
            groups=selected,
            needed=ordered,
            plain_needed=tuple(n for n in ordered if not keeps[n]),
            spaceless_needed=tuple(n for n in ordered if not keeps_spaceless[n]),
            fast=_fast_path(kind, selected),
            narrow=narrow(generic, batch=False) if generic else None,
            narrow_batch=narrow(generic, batch=True) if generic else None,
            named=named,
            narrow_named=narrow_named,
        )
    return plans


def _keeps(nodes: tuple[TransformNode, ...], *, spaceless: bool) -> list[bool]:
    """Per node, whether a plain value (``spaceless``: one without a space, the only
    whitespace a plain value may have) comes out of it and all its ancestors unchanged."""
    whitespace = (TRANSFORMS["removeWhitespace"], TRANSFORMS["compressWhitespace"])
    keeps = [True] * len(nodes)
    for index, node in enumerate(nodes):
        kept = node.keeps_plain or (spaceless and node.transform in whitespace)
        keeps[index] = kept and (index == 0 or keeps[node.parent])
    return keeps


def _fast_path(kind: str, groups: tuple[Group, ...]) -> FastPath | None:
    if any(g.ungated for g in groups):
        return None
    narrow_names: set[str] | None = set()
    for group in groups:
        if group.broad or not group.patterns:
            continue
        only = group.names.get(kind)
        if only is None or narrow_names is None:
            narrow_names = None
        else:
            narrow_names |= only
    return FastPath(
        broad=any(g.broad for g in groups),
        narrow_names=None if narrow_names is None else frozenset(narrow_names),
        groups={g.index: g for g in groups},
    )
