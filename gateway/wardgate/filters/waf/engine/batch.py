"""Scanning many targets of one kind at once: one buffer per tree node.

The distinct values of the kind are joined with :data:`~.databases.SEP` into one buffer,
each needed tree node transforms the buffer once, and each group scans it with its batch
database (patterns rewritten by :func:`~.databases.separated` so no match spans two
values); a match is attributed to a value by its end offset. Groups whose pipeline left the
buffer as it was take their hits from one scan of the union or of the kind's narrow
database. When a transformation merges or splits values (it decoded or removed a
separator), the batch gives up and the caller scans those targets one by one.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import hyperscan

from wardgate.filters.waf.engine.databases import SEP, SEP_BYTE
from wardgate.filters.waf.engine.plan import Group, KindPlan, Plan, SharedDatabase
from wardgate.filters.waf.engine.single import applies
from wardgate.filters.waf.rules import Rule
from wardgate.filters.waf.targets import Target

BATCH_MIN_TARGETS = 6
"""Below this many targets of a kind, scanning each is cheaper than joining."""

Hit = tuple[int, int]
"""(group-local id, end offset in the buffer)."""


@dataclass(slots=True)
class _Buffer:
    """The distinct values of a batch, joined, at every node the kind needs."""

    count: int
    """How many distinct values (pieces) the buffer holds."""
    holders: list[list[int]]
    """Per piece, the positions of the targets holding that value."""
    texts: dict[int, str]
    """Per tree node, the transformed buffer."""
    encoded: dict[int, bytes] = field(default_factory=dict)
    separators: dict[int, list[int]] = field(default_factory=dict)
    split: dict[int, list[str]] = field(default_factory=dict)

    def data(self, node: int) -> bytes:
        data = self.encoded.get(node)
        if data is None:
            data = self.encoded[node] = self.texts[node].encode("utf-8", "surrogatepass")
        return data

    def per_piece(self, node: int, hits: list[Hit]) -> dict[int, set[int]]:
        """The group-local ids of ``hits`` (in ``data(node)``) by the piece they lie in."""
        per_piece: dict[int, set[int]] = {}
        if not hits:
            return per_piece
        data = self.data(node)
        seps = self.separators.get(node)
        if seps is None:
            # Byte offset of each separator, from the lengths of the pieces.
            ends = list(itertools.accumulate(len(piece) + 1 for piece in data.split(b"\x01")))
            seps = self.separators[node] = [end - 1 for end in ends[:-1]]
        for expr, end in hits:
            last = end - 1
            if last > 0 and data[last] == SEP_BYTE:
                last -= 1  # a `$` that matched at the separator
            per_piece.setdefault(bisect.bisect_left(seps, last), set()).add(expr)
        return per_piece

    def values(self, node: int) -> list[str]:
        """The transformed pieces at ``node``."""
        values = self.split.get(node)
        if values is None:
            values = self.split[node] = self.texts[node].split(SEP)
        return values


def rules_batched(
    plan: Plan,
    kind: str,
    targets: Sequence[Target],
    verdicts: dict[tuple[str, str], bool],
    scratches: dict[int, hyperscan.Scratch],
) -> list[list[Rule]] | None:
    """The rules that matched each of ``targets`` (all of ``kind``), in target order, as
    :func:`~.single.rules_each` finds them; ``None`` when a transformation merged or split
    values. Targets whose name some narrow group looks at alone (``KindPlan.named``) must
    not be passed: their groups are left out here."""
    kind_plan = plan.kinds[kind]
    buffer = _buffer(plan, kind_plan, targets)
    if buffer is None:
        return None
    found: list[list[Rule]] = [[] for _ in targets]
    raw = buffer.texts[0]
    # Hits of the shared scans of the unchanged buffer, split per group (scanned lazily).
    shared: dict[int, dict[int, list[Hit]]] = {}
    for group in kind_plan.groups:
        if group.batch is None and not group.detectors:
            continue
        if not group.broad and group.names.get(kind) is not None:
            continue  # its names are scanned one by one
        database = plan.union_batch if group.broad else kind_plan.narrow_batch
        hits: list[Hit]
        if group.batch is not None and database is not None and buffer.texts[group.node] is raw:
            by_group = shared.get(id(database))
            if by_group is None:
                by_group = shared[id(database)] = _scan_shared(database, buffer, scratches)
            hits = by_group.get(group.index, [])
        elif group.batch is not None:
            hits = _scan(group.batch, buffer.data(group.node), scratches)
        else:
            hits = []
        per_piece = buffer.per_piece(group.node, hits)
        _collect(group, kind, targets, buffer, per_piece, verdicts, found)
    return found


def _buffer(plan: Plan, kind_plan: KindPlan, targets: Sequence[Target]) -> _Buffer | None:
    # Equal values (the same key or text in every element of a JSON array) go into the
    # buffer once; their hits count for every target that holds them.
    pieces: dict[str, int] = {}
    holders: list[list[int]] = []
    for position, target in enumerate(targets):
        value = target.value.replace(SEP, "\0") if SEP in target.value else target.value
        piece = pieces.setdefault(value, len(pieces))
        if piece == len(holders):
            holders.append([])
        holders[piece].append(position)
    count = len(pieces)
    texts: dict[int, str] = {0: SEP.join(pieces)}
    nodes = plan.nodes
    for node in kind_plan.needed:
        entry = nodes[node]
        texts[node] = entry.transform(texts[entry.parent])
        if texts[node].count(SEP) != count - 1:
            return None
    return _Buffer(count, holders, texts)


def _scan(
    database: hyperscan.Database, data: bytes, scratches: dict[int, hyperscan.Scratch]
) -> list[Hit]:
    hits: list[Hit] = []

    def on_match(expr: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
        hits.append((expr, end))

    database.scan(data, match_event_handler=on_match, scratch=scratches[id(database)])
    return hits


def _scan_shared(
    shared: SharedDatabase, buffer: _Buffer, scratches: dict[int, hyperscan.Scratch]
) -> dict[int, list[Hit]]:
    """Scan the raw buffer with a shared database: the hits per owning group's index."""
    by_group: dict[int, list[Hit]] = {}
    owners = shared.owners
    for expr, end in _scan(shared.database, buffer.data(0), scratches):
        owner_group, local = owners[expr]
        by_group.setdefault(owner_group.index, []).append((local, end))
    return by_group


def _collect(
    group: Group,
    kind: str,
    targets: Sequence[Target],
    buffer: _Buffer,
    per_piece: dict[int, set[int]],
    verdicts: dict[tuple[str, str], bool],
    found: list[list[Rule]],
) -> None:
    """Append to ``found`` the group's rules that ``per_piece`` (group-local ids matched,
    per piece) and its detectors make match each target."""
    only = group.names.get(kind)
    for index, exprs in per_piece.items():
        ordered = sorted(exprs)
        for position in buffer.holders[index]:
            target = targets[position]
            if only is not None and target.name.lower() not in only:
                continue
            for expr in ordered:
                rule, is_gate = group.expressions[expr]
                if not is_gate and applies(rule, target):
                    found[position].append(rule)
    for detector in group.detectors:
        gate = detector.gate
        indexes = (
            range(buffer.count)
            if gate is None
            else sorted(i for i, e in per_piece.items() if gate in e)
        )
        if not indexes:
            continue
        values = buffer.values(group.node)
        for index in indexes:
            for position in buffer.holders[index]:
                target = targets[position]
                if (
                    (only is None or target.name.lower() in only)
                    and applies(detector.rule, target)
                    and detector.judge(values[index], verdicts)
                ):
                    found[position].append(detector.rule)
