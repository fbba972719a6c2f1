"""The rule engine: rules compiled into Hyperscan databases, one pass per target.

Rules sharing a transformation pipeline form a *group*; each group is one Hyperscan
database (every ``rx`` pattern, every ``pm`` phrase and every operator prefilter of the
group's rules), so a target is transformed once per pipeline and scanned once per group.
Pipelines share prefixes (``urlDecodeUni`` → ``htmlEntityDecode`` → ...), computed once per
target along a small tree. ``detectSQLi``/``detectXSS`` call libinjection on the group's
transformed value, only where their prefilter matched.

Per value the engine does as few scans as it can: rules that look at parameters share a
*union* database, the other ("narrow") rules are grouped by the targets they select and
share one database per kind; a value no pipeline changes is answered by those one or two
scans, a transformed text that several pipelines produce is scanned once, libinjection
judges each distinct value once per request, and a batched kind puts each distinct value
into its buffer once.

Compiling is the expensive part (Hyperscan builds automata); :func:`engine_for` keeps the
engines of recent rule selections, so a reload that changes no rule reuses the compiled
databases. An :class:`Engine` is immutable; Hyperscan scratch space is per thread.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import hyperscan
import libinjection

from wardgate.filters.api import FilterCompileError
from wardgate.filters.waf.rules import Rule
from wardgate.filters.waf.targets import Target
from wardgate.filters.waf.transforms import PLAIN_IDENTITY, TRANSFORMS, is_plain

_FLAGS = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_DOTALL | hyperscan.HS_FLAG_SINGLEMATCH
_BATCH_FLAGS = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_DOTALL
SEP = "\x01"
"""Joins the values of one kind into one buffer for a batched scan. Batch patterns are
rewritten so that nothing matches it (see :func:`separated`), so no match spans values."""
_SEP_BYTE = 0x01
BATCH_MIN_TARGETS = 6
"""Below this many targets of a kind, scanning each is cheaper than joining."""
MEMO_SIZE = 8192
"""Distinct (kind, name, value) answers an engine remembers; past it the memo starts over."""
MEMO_VALUE_MAX = 256
"""Longer values are not remembered (they rarely repeat, and would make the memo large)."""
OWN_ENGINE_MAX_RULES = 12
"""A kind with at most this many rules, sharing groups with more than twice as many, gets an
engine of its own."""
SHARED_TEXT_MAX = 4096
"""Up to this length, one union scan of a transformed text shared by several groups is
cheaper than a scan per group; on longer texts the small databases scan faster."""


def separated(pattern: str) -> str:
    """The batch form of a Hyperscan pattern: ``.``, negated classes and ``\\W \\S \\D``
    exclude the separator, ``^``/``$`` also match at a separator. On a value without the
    separator it matches exactly what ``pattern`` matches."""
    out: list[str] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            if nxt in "WSD":
                out.append(f"[^\\{nxt.lower()}\\x01]")
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[":
            j = i + 1
            negated = j < n and pattern[j] == "^"
            if negated:
                j += 1
            start = j
            if j < n and pattern[j] == "]":
                j += 1  # a leading ] is a literal
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            body = pattern[start:j]
            out.append(f"[^\\x01{body}]" if negated else f"[{body}]")
            i = j + 1
            continue
        if c == ".":
            out.append("[^\\x01]")
        elif c == "^":
            out.append("(?:^|\\x01)")
        elif c == "$":
            out.append("(?:$|\\x01)")
        else:
            out.append(c)
        i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Match:
    """A rule that matched a target. Carries the location, never the value."""

    rule: Rule
    location: str
    kind: str


def _encodable(value: str) -> str:
    """libinjection encodes its input as strict UTF-8; a lone surrogate (a JSON ``\\udac4``
    escape, a ``%uD800`` decode) would raise there and fail the request closed with 500.
    Such code points become U+FFFD, which keeps the tokens around them intact."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return value


def _sqli(value: str) -> bool:
    return bool(libinjection.is_sql_injection(_encodable(value))["is_sqli"])


def _xss(value: str) -> bool:
    return bool(libinjection.is_xss(_encodable(value))["is_xss"])


_DETECTORS: dict[str, Callable[[str], bool]] = {"detectSQLi": _sqli, "detectXSS": _xss}


def _detect(operator: str, value: str, verdicts: dict[tuple[str, str], bool]) -> bool:
    """``_DETECTORS[operator](value)``, remembered in ``verdicts`` (it depends on nothing
    else)."""
    key = (operator, value)
    verdict = verdicts.get(key)
    if verdict is None:
        verdict = verdicts[key] = _DETECTORS[operator](value)
    return verdict


def _escape_bytes(phrase: str) -> bytes:
    return b"".join(
        bytes([b]) if chr(b).isalnum() else b"\\x%02x" % b for b in phrase.encode("utf-8")
    )


@dataclass(slots=True)
class _Group:
    """Rules sharing one transformation pipeline."""

    index: int
    node: int
    database: hyperscan.Database | None
    patterns: tuple[bytes, ...]
    expressions: tuple[tuple[Rule, bool], ...]
    """Per Hyperscan id: the rule and whether the id is its prefilter (a gate)."""
    detectors: tuple[tuple[Rule, int | None], ...]
    """libinjection rules and the id of their prefilter (``None``: always run)."""
    kinds: frozenset[str]
    batch: hyperscan.Database | None
    """The same patterns in :func:`separated` form, every match reported."""
    broad: bool
    """Whether its patterns are in the union database."""
    names: dict[str, frozenset[str]]
    """Per kind, the only target names any rule of the group looks at (absent: all)."""
    offset: int = 0
    """Where this group's ids start in the union database."""
    ungated: bool = False
    """Whether a detector of the group runs without a prefilter (on every value)."""


def _cache_dir() -> Path | None:
    """A private directory for compiled databases (``$WARDGATE_HS_CACHE``, else
    ``~/.cache/wardgate/hyperscan``); ``None`` when there is none we own (read-only root
    filesystems: then every process compiles)."""
    configured = os.environ.get("WARDGATE_HS_CACHE")
    if configured == "":
        return None
    path = Path(configured) if configured else Path.home() / ".cache" / "wardgate" / "hyperscan"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError:
        return None
    # Only a directory of our own that nobody else can write: a planted database would
    # silently change what the WAF matches.
    if info.st_uid != os.getuid() or info.st_mode & 0o022:
        return None
    return path


def _compile(
    patterns: Sequence[bytes],
    expressions: Sequence[tuple[Rule, bool]],
    flags: int = _FLAGS,
) -> hyperscan.Database:
    """Compile (or load the identical database compiled before: the cache key is a digest
    of every pattern, the flags and the Hyperscan version)."""
    version = str(getattr(hyperscan, "__version__", "")).encode()
    key = hashlib.sha256(b"\0".join([str(flags).encode(), version, *patterns])).hexdigest()
    cache = _cache_dir()
    cached = cache / f"{key}.hsdb" if cache else None
    if cached is not None and cached.is_file():
        try:
            return hyperscan.loadb(cached.read_bytes(), mode=hyperscan.HS_MODE_BLOCK)
        except (hyperscan.error, OSError, TypeError, ValueError):
            pass  # stale or damaged: compile again
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    try:
        database.compile(
            expressions=list(patterns),
            ids=list(range(len(patterns))),
            elements=len(patterns),
            flags=[flags] * len(patterns),
        )
    except hyperscan.error:
        raise FilterCompileError(_find_bad_patterns(list(patterns), list(expressions))) from None
    if cached is not None:
        try:
            partial = cached.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(hyperscan.dumpb(database))
            partial.replace(cached)  # atomic: readers never see half a file
        except OSError:
            pass
    return database


class Engine:
    """Compiled rules. :meth:`scan` returns every rule that matched, with its location.

    Besides one database per pipeline there is a *union* database of every pattern: most
    values (plain words, numbers, tokens) come out of every pipeline unchanged, and then one
    scan of the union database answers for all groups at once. A group whose pipeline did
    change the value is scanned on its own with that value."""

    def __init__(self, rules: Sequence[Rule], *, split: bool = True) -> None:
        """``split``: give kinds that few rules look at an engine of their own (see
        :data:`OWN_ENGINE_MAX_RULES`)."""
        self.rules = tuple(rules)
        # Transformation tree: node 0 is the raw value.
        self._nodes: list[tuple[int, Callable[[str], str], bool]] = [(0, TRANSFORMS["none"], True)]
        node_of: dict[tuple[str, ...], int] = {(): 0}
        # Broad rules (those that look at parameters) share the union database; narrow ones
        # (a method, one header) stay out of it, or they would match every other value.
        # Narrow rules are further split by the targets they select, so a value is scanned
        # only with patterns that apply to its kind (and name), not with every rule of the
        # pipeline (a method rule would otherwise run, and match, on every header).
        by_pipeline: dict[tuple[tuple[str, ...], bool, object], list[Rule]] = {}
        for rule in self.rules:
            broad = "ARGS" in rule.kinds
            selection = None if broad else (rule.kinds, rule.only_names)
            by_pipeline.setdefault((rule.transformations, broad, selection), []).append(rule)
            for i in range(1, len(rule.transformations) + 1):
                prefix = rule.transformations[:i]
                if prefix not in node_of:
                    node_of[prefix] = len(self._nodes)
                    self._nodes.append(
                        (
                            node_of[prefix[:-1]],
                            TRANSFORMS[prefix[-1]],
                            prefix[-1] in PLAIN_IDENTITY,
                        )
                    )
        self._groups = [
            self._group(i, node_of[p], rs, broad)
            for i, ((p, broad, _), rs) in enumerate(by_pipeline.items())
        ]
        union_patterns: list[bytes] = []
        union_owner: list[tuple[_Group, int]] = []
        for group in self._groups:
            if not group.broad:
                continue
            group.offset = len(union_patterns)
            union_patterns.extend(group.patterns)
            union_owner.extend((group, i) for i in range(len(group.patterns)))
        self._union_owner = tuple(union_owner)
        self._union = (
            _compile(union_patterns, [o[0].expressions[o[1]] for o in union_owner])
            if union_patterns
            else None
        )
        self._union_batch = (
            (
                _compile(
                    [separated(p.decode()).encode() for p in union_patterns],
                    [o[0].expressions[o[1]] for o in union_owner],
                    _BATCH_FLAGS,
                ),
                self._union_owner,
            )
            if union_patterns
            else None
        )
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
        # Per kind, the nodes a plain value (:func:`is_plain`) still has to go through: those
        # below a transformation that may change it. Every other node keeps it as it is.
        keeps = [True] * len(self._nodes)
        for index, (parent, _transform, keeps_plain) in enumerate(self._nodes):
            keeps[index] = keeps_plain and (index == 0 or keeps[parent])
        self._plain_needed = {
            kind: tuple(node for node in needed if not keeps[node])
            for kind, (needed, _groups) in self._plan.items()
        }
        # The same for plain values without a space (the only whitespace a plain value may
        # have): whitespace removal cannot change those either.
        spaceless = (TRANSFORMS["removeWhitespace"], TRANSFORMS["compressWhitespace"])
        for index, (parent, transform, keeps_plain) in enumerate(self._nodes):
            keeps[index] = (keeps_plain or transform in spaceless) and (index == 0 or keeps[parent])
        self._spaceless_needed = {
            kind: tuple(node for node in needed if not keeps[node])
            for kind, (needed, _groups) in self._plan.items()
        }
        # Per kind, for values no pipeline changes (and no detector that runs ungated):
        # whether the union applies, the names any narrow rule looks at (None: all), and
        # the kind's groups by index.
        self._fast: dict[str, tuple[bool, frozenset[str] | None, dict[int, _Group]]] = {}
        for kind, (_needed, groups) in self._plan.items():
            if any(g.ungated for g in groups):
                continue
            narrow_names: set[str] | None = set()
            for group in groups:
                if group.broad or not group.patterns:
                    continue
                only = group.names.get(kind)
                if only is None or narrow_names is None:
                    narrow_names = None
                else:
                    narrow_names |= only
            self._fast[kind] = (
                any(g.broad for g in groups),
                None if narrow_names is None else frozenset(narrow_names),
                {g.index: g for g in groups},
            )
        # Per kind, the narrow groups' patterns in one database too (kinds with the same
        # narrow groups share it): a header value then takes one scan for every narrow rule
        # whose pipeline left it unchanged instead of one per rule selection. Groups that
        # look only at some names (``REQUEST_HEADERS:content-length``) are left out of the
        # kind's database and get one per name with them in: their patterns (``[^0-9]``)
        # would match almost every other value, a hit per value in a batch, then dropped.
        self._narrow: dict[str, tuple[hyperscan.Database, tuple[tuple[_Group, int], ...]]] = {}
        self._narrow_named: dict[
            tuple[str, str], tuple[hyperscan.Database, tuple[tuple[_Group, int], ...]]
        ] = {}
        self._narrow_batch: dict[
            str, tuple[hyperscan.Database, tuple[tuple[_Group, int], ...]]
        ] = {}
        self._named: dict[str, frozenset[str]] = {}
        """Per kind, the names some narrow group looks at alone (batches leave them out)."""
        narrow_by_set: dict[
            tuple[tuple[int, ...], bool],
            tuple[hyperscan.Database, tuple[tuple[_Group, int], ...]],
        ] = {}

        def narrow_database(
            selection: tuple[_Group, ...], batch: bool
        ) -> tuple[hyperscan.Database, tuple[tuple[_Group, int], ...]]:
            key = (tuple(g.index for g in selection), batch)
            compiled = narrow_by_set.get(key)
            if compiled is None:
                owners = tuple((g, i) for g in selection for i in range(len(g.patterns)))
                patterns = [g.patterns[i] for g, i in owners]
                if batch:
                    patterns = [separated(p.decode()).encode() for p in patterns]
                expressions = [g.expressions[i] for g, i in owners]
                database = _compile(patterns, expressions, _BATCH_FLAGS if batch else _FLAGS)
                compiled = narrow_by_set[key] = (database, owners)
            return compiled

        for kind, (_needed, groups) in self._plan.items():
            narrow_groups = tuple(g for g in groups if not g.broad and g.patterns)
            generic = tuple(g for g in narrow_groups if g.names.get(kind) is None)
            if generic:
                self._narrow[kind] = narrow_database(generic, batch=False)
                self._narrow_batch[kind] = narrow_database(generic, batch=True)
            named = frozenset(
                name
                for g in groups
                if not g.broad and g.names.get(kind) is not None
                for name in g.names[kind]
            )
            self._named[kind] = named
            for name in named:
                for_name = tuple(
                    g for g in narrow_groups if name in g.names.get(kind, frozenset({name}))
                )
                if for_name:
                    self._narrow_named[kind, name] = narrow_database(for_name, batch=False)
        self._local = threading.local()
        # What a value matched depends only on its kind, name and text: request after
        # request repeats most of them (header values, parameter names), and a dict lookup
        # replaces the scans. Shared by threads: single dict operations are atomic.
        self._memo: dict[tuple[str, str, str], tuple[Rule, ...]] = {}
        # A kind that few rules look at (the raw body, the method) would otherwise go
        # through the pipelines and databases of every rule sharing a group with those few:
        # 6 transformations and 43 patterns over a 4 KiB body for 2 rules. An engine of
        # just its rules finds the same matches with a fraction of the work.
        self._own: dict[str, Engine] = {}
        if split:
            for kind, (_needed, groups) in self._plan.items():
                own = [rule for rule in self.rules if kind in rule.kinds]
                shared = sum(len(g.expressions) + len(g.detectors) for g in groups)
                if len(own) <= OWN_ENGINE_MAX_RULES and 2 * len(own) < shared:
                    self._own[kind] = Engine(own, split=False)

    def forget(self) -> None:
        """Empty the memo: the next scans work everything out again (tests and the cold
        benchmark use it)."""
        self._memo.clear()
        for engine in self._own.values():
            engine.forget()

    def _group(self, index: int, node: int, rules: list[Rule], broad: bool) -> _Group:
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
        return _Group(
            index=index,
            node=node,
            database=_compile(patterns, expressions) if patterns else None,
            batch=_compile(
                [separated(p.decode()).encode() for p in patterns], expressions, _BATCH_FLAGS
            )
            if patterns
            else None,
            patterns=tuple(patterns),
            expressions=tuple(expressions),
            detectors=tuple(detectors),
            kinds=frozenset(k for r in rules for k in r.kinds),
            broad=broad,
            names=_names_by_kind(rules),
            ungated=any(gate is None for _rule, gate in detectors),
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
            for group in self._groups:
                if group.batch is not None:
                    scratches[id(group.batch)] = hyperscan.Scratch(group.batch)
            if self._union is not None:
                scratches[id(self._union)] = hyperscan.Scratch(self._union)
            if self._union_batch is not None:
                scratches[id(self._union_batch[0])] = hyperscan.Scratch(self._union_batch[0])
            for database, _owners in (
                *self._narrow.values(),
                *self._narrow_batch.values(),
                *self._narrow_named.values(),
            ):
                scratches[id(database)] = hyperscan.Scratch(database)
            self._local.scratch = scratches
        return scratches

    def scan(self, targets: Iterable[Target]) -> list[Match]:
        """Every (rule, target) match, in target order; a rule matching several targets
        appears once per target. A value seen recently with the same kind and name is
        answered from the memo; kinds with many unseen targets are scanned batched (one
        buffer per kind and pipeline), the rest one by one; all three give the same answer."""
        listed = targets if isinstance(targets, list) else list(targets)
        matches: list[Match] = []
        for target, answer in zip(listed, self._answers(listed), strict=True):
            if answer:
                location, kind = target.location, target.kind
                matches.extend(Match(rule, location, kind) for rule in answer)
        return matches

    def _answers(self, listed: list[Target]) -> list[tuple[Rule, ...] | None]:
        """The rules that match each target (``None`` or empty: none)."""
        memo = self._memo
        answers: list[tuple[Rule, ...] | None] = [None] * len(listed)
        unseen: dict[str, list[int]] = {}
        plan = self._plan
        own: dict[str, list[int]] | None = None
        for position, target in enumerate(listed):
            value = target.value
            if not value or target.kind not in plan:
                answers[position] = ()
                continue
            if target.kind in self._own:
                if own is None:
                    own = {}
                own.setdefault(target.kind, []).append(position)
                continue
            if len(value) <= MEMO_VALUE_MAX:
                known = memo.get((target.kind, target.name, value))
                if known is not None:
                    answers[position] = known
                    continue
            unseen.setdefault(target.kind, []).append(position)
        if unseen:
            # libinjection answers by (operator, value): repeated values (the same text in
            # every element of a JSON array) are judged once per request.
            verdicts: dict[tuple[str, str], bool] = {}
            single: list[int] = []
            for kind, positions in unseen.items():
                found = None
                batched = positions
                named = self._named.get(kind)
                if named:
                    single.extend(p for p in positions if listed[p].name.lower() in named)
                    batched = [p for p in positions if listed[p].name.lower() not in named]
                if len(batched) >= BATCH_MIN_TARGETS:
                    found = self._scan_batch(kind, [listed[i] for i in batched], verdicts)
                if found is None:
                    single.extend(batched)
                    continue
                for position, rules in zip(batched, found, strict=True):
                    answers[position] = tuple(rules)
            if single:
                each = self._rules_each([listed[i] for i in single], verdicts)
                for position, rules in zip(single, each, strict=True):
                    answers[position] = tuple(rules)
            if len(memo) > MEMO_SIZE:
                memo.clear()  # bounded: a flood of unseen values only costs the memo
            for positions in unseen.values():
                for position in positions:
                    target = listed[position]
                    if len(target.value) <= MEMO_VALUE_MAX:
                        memo[(target.kind, target.name, target.value)] = answers[position] or ()
        if own is not None:
            for kind, positions in own.items():
                found_own = self._own[kind]._answers([listed[i] for i in positions])
                for position, answer in zip(positions, found_own, strict=True):
                    answers[position] = answer
        return answers

    def _scan_batch(
        self,
        kind: str,
        targets: list[Target],
        verdicts: dict[tuple[str, str], bool],
    ) -> list[list[Rule]] | None:
        """Scan all ``targets`` (one kind) with one buffer per pipeline node: the rules that
        matched, per target. ``None`` when a transformation merged or split values (a
        decoded separator): then the caller scans them one by one."""
        needed, groups = self._plan[kind]
        scratches = self._scratches()
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
        raw = SEP.join(pieces)
        texts: dict[int, str] = {0: raw}
        for node in needed:
            parent, transform, _plain = self._nodes[node]
            texts[node] = transform(texts[parent])
            if texts[node].count(SEP) != count - 1:
                return None
        encoded: dict[int, bytes] = {}
        boundaries: dict[int, list[int]] = {}
        split: dict[int, list[str]] = {}
        found: list[list[Rule]] = [[] for _ in targets]
        hits: list[tuple[int, int]] = []

        def on_match(expr: int, _start: int, end: int, _flags: int, _ctx: object) -> None:
            hits.append((expr, end))

        # Groups whose pipeline left the buffer as it was take their hits from one scan of
        # the union (broad groups) or of the kind's narrow database, split per group here.
        shared_databases = (self._union_batch, self._narrow_batch.get(kind))
        shared_hits: list[dict[int, list[tuple[int, int]]] | None] = [None, None]
        for group in groups:
            if group.batch is None and not group.detectors:
                continue
            if not group.broad and group.names.get(kind) is not None:
                continue  # its names are scanned one by one (see :meth:`scan`)
            node = group.node
            data = encoded.get(node)
            if data is None:
                data = encoded[node] = texts[node].encode("utf-8", "surrogatepass")
            hits.clear()
            which = 0 if group.broad else 1
            shared = shared_databases[which]
            if group.batch is not None and shared is not None and texts[node] is raw:
                by_group = shared_hits[which]
                if by_group is None:
                    by_group = shared_hits[which] = {}
                    database, owners = shared
                    database.scan(
                        data, match_event_handler=on_match, scratch=scratches[id(database)]
                    )
                    for expr, end in hits:
                        owner_group, local = owners[expr]
                        by_group.setdefault(owner_group.index, []).append((local, end))
                    hits.clear()
                hits.extend(by_group.get(group.index, ()))
            elif group.batch is not None:
                group.batch.scan(
                    data, match_event_handler=on_match, scratch=scratches[id(group.batch)]
                )
            per_target: dict[int, set[int]] = {}
            if hits:
                seps = boundaries.get(node)
                if seps is None:
                    # Byte offset of each separator, from the lengths of the pieces.
                    seps = boundaries[node] = list(
                        itertools.accumulate(len(piece) + 1 for piece in data.split(b"\x01"))
                    )
                    seps = boundaries[node] = [end - 1 for end in seps[:-1]]
                for expr, end in hits:
                    last = end - 1
                    if last > 0 and data[last] == _SEP_BYTE:
                        last -= 1  # a `$` that matched at the separator
                    per_target.setdefault(bisect.bisect_left(seps, last), set()).add(expr)
            only = group.names.get(kind)
            for index, exprs in per_target.items():
                ordered = sorted(exprs)
                for position in holders[index]:
                    target = targets[position]
                    if only is not None and target.name.lower() not in only:
                        continue
                    for expr in ordered:
                        rule, is_gate = group.expressions[expr]
                        if not is_gate and self._applies(rule, target):
                            found[position].append(rule)
            for rule, gate in group.detectors:
                indexes = (
                    range(count)
                    if gate is None
                    else sorted(i for i, e in per_target.items() if gate in e)
                )
                if not indexes:
                    continue
                values = split.get(node)
                if values is None:
                    values = split[node] = texts[node].split(SEP)
                operator = rule.operator
                for index in indexes:
                    for position in holders[index]:
                        target = targets[position]
                        if (
                            (only is None or target.name.lower() in only)
                            and self._applies(rule, target)
                            and _detect(operator, values[index], verdicts)
                        ):
                            found[position].append(rule)
        return found

    def scan_each(self, targets: Iterable[Target]) -> list[Match]:
        """The one-target-at-a-time scan, without the memo: what :meth:`scan` must agree
        with."""
        listed = list(targets)
        return [
            Match(rule, target.location, target.kind)
            for target, rules in zip(listed, self._rules_each(listed, {}), strict=True)
            for rule in rules
        ]

    def _rules_each(
        self, targets: Sequence[Target], verdicts: dict[tuple[str, str], bool]
    ) -> list[list[Rule]]:
        """The rules that match each target, scanning one target at a time (small requests,
        and the batch fallback). ``verdicts`` carries libinjection answers between calls of
        one scan."""
        scratches = self._scratches()
        answers: list[list[Rule]] = []
        nodes = self._nodes
        union = self._union
        owner = self._union_owner
        union_hits: list[int] = []
        group_hits: list[int] = []

        def on_union(expr: int, _start: int, _end: int, _flags: int, _ctx: object) -> None:
            union_hits.append(expr)

        def on_group(expr: int, _start: int, _end: int, _flags: int, _ctx: object) -> None:
            group_hits.append(expr)

        for target in targets:
            rules_hit: list[Rule] = []
            answers.append(rules_hit)
            plan = self._plan.get(target.kind)
            if plan is None or not target.value:
                continue
            needed, groups = plan
            raw = target.value
            values: dict[int, str]
            unchanged = False
            if is_plain(raw):
                values = dict.fromkeys(needed, raw)
                values[0] = raw
                unchanged = True
                plain_nodes = (self._plain_needed if " " in raw else self._spaceless_needed)[
                    target.kind
                ]
                for node in plain_nodes:
                    parent, transform, keeps_plain = nodes[node]
                    before = values[parent]
                    after = values[node] = (
                        before if keeps_plain and before is raw else transform(before)
                    )
                    unchanged = unchanged and after is raw
            else:
                values = {0: raw}
                for node in needed:
                    parent, transform, _keeps_plain = nodes[node]
                    values[node] = transform(values[parent])
            # Groups whose pipeline left the value as it was share one union scan (broad
            # groups) and one scan of the kind's narrow database.
            hits: dict[int, set[int]] = {}
            name = target.name.lower()
            narrow = self._narrow_named.get((target.kind, name)) or self._narrow.get(target.kind)
            shared_broad = shared_narrow = False
            fast = self._fast.get(target.kind) if unchanged else None
            if fast is not None:
                # Every pipeline left the value as it was: the shared scans answer for all
                # groups, and only the groups they hit need a look.
                shared_broad, narrow_names, kind_groups = fast
                shared_narrow = narrow is not None and (
                    narrow_names is None or name in narrow_names
                )
            for group in () if fast is not None else groups:
                if values[group.node] is raw:
                    if group.broad:
                        shared_broad = True
                    elif group.patterns and not shared_narrow:
                        only = group.names.get(target.kind)
                        shared_narrow = only is None or name in only
            data: bytes | None = None
            if union is not None and shared_broad:
                data = raw.encode("utf-8", "surrogatepass")
                union_hits.clear()
                union.scan(data, match_event_handler=on_union, scratch=scratches[id(union)])
                for expr in union_hits:
                    group, local = owner[expr]
                    hits.setdefault(group.index, set()).add(local)
            if narrow is not None and shared_narrow:
                if data is None:
                    data = raw.encode("utf-8", "surrogatepass")
                database, narrow_owner = narrow
                union_hits.clear()
                database.scan(data, match_event_handler=on_union, scratch=scratches[id(database)])
                for expr in union_hits:
                    group, local = narrow_owner[expr]
                    hits.setdefault(group.index, set()).add(local)
            # Broad groups whose pipelines turned the value into the same new text share one
            # union scan of that text (hits of the other groups in it are not theirs).
            changed: dict[str, int] = {}
            visit: Iterable[_Group] = groups
            if fast is not None:
                visit = [kind_groups[i] for i in sorted(hits) if i in kind_groups]
            for group in () if fast is not None else groups:
                value = values[group.node]
                if (
                    group.broad
                    and value is not raw
                    and group.patterns
                    and len(value) <= SHARED_TEXT_MAX  # no hashing of long texts
                ):
                    changed[value] = changed.get(value, 0) + 1
            by_text: dict[str, dict[int, set[int]]] = {}
            for group in visit:
                value = values[group.node]
                # Answered by a shared scan (an empty database never runs one).
                shared = value is raw and (group.broad or bool(group.patterns))
                if shared and group.index not in hits and not group.ungated:
                    continue  # nothing matched and no detector runs unconditionally
                only = group.names.get(target.kind)
                if only is not None and target.name.lower() not in only:
                    continue
                if shared:
                    found = hits.get(group.index, set())
                elif (
                    union is not None
                    and group.broad
                    and len(value) <= SHARED_TEXT_MAX
                    and changed.get(value, 0) > 1
                ):
                    text_hits = by_text.get(value)
                    if text_hits is None:
                        text_hits = by_text[value] = {}
                        union_hits.clear()
                        union.scan(
                            value.encode("utf-8", "surrogatepass"),
                            match_event_handler=on_union,
                            scratch=scratches[id(union)],
                        )
                        for expr in union_hits:
                            owner_group, local = owner[expr]
                            text_hits.setdefault(owner_group.index, set()).add(local)
                    found = text_hits.get(group.index, set())
                elif group.database is not None:
                    group_hits.clear()
                    group.database.scan(
                        value.encode("utf-8", "surrogatepass"),
                        match_event_handler=on_group,
                        scratch=scratches[id(group)],
                    )
                    found = set(group_hits)
                else:
                    found = set()
                for expr in sorted(found):
                    rule, is_gate = group.expressions[expr]
                    if not is_gate and self._applies(rule, target):
                        rules_hit.append(rule)
                for rule, gate in group.detectors:
                    if gate is not None and gate not in found:
                        continue
                    if self._applies(rule, target) and _detect(rule.operator, value, verdicts):
                        rules_hit.append(rule)
        return answers

    @staticmethod
    def _applies(rule: Rule, target: Target) -> bool:
        return target.kind in rule.kinds and rule.applies_to(target.kind, target.name)


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
