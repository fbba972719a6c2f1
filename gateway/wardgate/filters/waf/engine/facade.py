"""The :class:`Engine` facade: a compiled :class:`~.plan.Plan`, a memo, and the choice of
scan strategy per target; :func:`engine_for` keeps the engines of recent rule selections."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from wardgate.filters.waf.engine.batch import BATCH_MIN_TARGETS, rules_batched
from wardgate.filters.waf.engine.databases import Scratches
from wardgate.filters.waf.engine.memo import MEMO_VALUE_MAX, Key, Memo, memo_key
from wardgate.filters.waf.engine.plan import Plan, compile_plan
from wardgate.filters.waf.engine.single import rules_each
from wardgate.filters.waf.rules import Rule
from wardgate.filters.waf.targets import Target


@dataclass(frozen=True, slots=True)
class Match:
    """A rule that matched a target. Carries the location, never the value."""

    rule: Rule
    location: str
    kind: str


class Engine:
    """Compiled rules. :meth:`scan` returns every rule that matched, with its location.

    The plan is immutable. The only state that changes is the memo of recent answers
    (:class:`~.memo.Memo`, safe to share between threads) and Hyperscan scratch space, which
    is per thread; so one engine serves every thread and every policy generation that
    selects the same rules."""

    __slots__ = ("_memo", "_own", "_owners", "_routes", "_scratches", "plan", "rules")

    def __init__(self, rules: Sequence[Rule], *, split: bool = True) -> None:
        """Compile ``rules`` (raises :class:`~wardgate.filters.api.FilterCompileError`).
        ``split``: give kinds that few rules look at an engine of their own (see
        :meth:`~.plan.Plan.own_kinds`)."""
        self.rules = tuple(rules)
        self.plan: Plan = compile_plan(self.rules)
        self._scratches = Scratches(self.plan.databases())
        self._memo = Memo()
        self._own: dict[str, Engine] = (
            {kind: Engine(own, split=False) for kind, own in self.plan.own_kinds().items()}
            if split
            else {}
        )
        # Per kind a rule looks at: the engine that scans it, and the lookup of that
        # engine's memo (the memo's dict is cleared in place, never replaced).
        self._owners: dict[str, Engine] = dict.fromkeys(self.plan.kinds, self)
        self._owners.update(self._own)
        self._routes: dict[str, Callable[[Key], tuple[Rule, ...] | None]] = {
            kind: owner._memo.lookup for kind, owner in self._owners.items()
        }

    def forget(self) -> None:
        """Empty the memo: the next scans work everything out again (tests and the cold
        benchmark use it)."""
        self._memo.forget()
        for engine in self._own.values():
            engine.forget()

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
        """The rules that match each target (``None`` or empty: none). Kinds that an engine
        of their own scans (``split``) are looked up in that engine's memo in the same
        pass, so a remembered value costs no call into it."""
        answers: list[tuple[Rule, ...] | None] = [None] * len(listed)
        routes = self._routes
        unseen: dict[str, list[int]] | None = None
        keys: dict[int, Key] = {}
        for position, target in enumerate(listed):
            value = target.value
            # None (the answer already in place): empty, or a kind no rule looks at.
            remembered = routes.get(target.kind) if value else None
            if remembered is None:
                continue
            # Inline memo_key for the common short value: this runs for every target.
            if len(value) <= MEMO_VALUE_MAX:
                key: Key | None = (target.kind, target.name, value)
            else:
                key = memo_key(target)
            if key is not None:
                known = remembered(key)
                if known is not None:
                    answers[position] = known
                    continue
                keys[position] = key
            if unseen is None:
                unseen = {}
            unseen.setdefault(target.kind, []).append(position)
        if unseen is not None:
            self._scan_owned(listed, unseen, keys, answers)
        return answers

    def _scan_owned(
        self,
        listed: list[Target],
        unseen: dict[str, list[int]],
        keys: dict[int, Key],
        answers: list[tuple[Rule, ...] | None],
    ) -> None:
        """Fill ``answers`` at the ``unseen`` positions (by kind), each kind scanned by the
        engine that owns it, and remember them (``keys``) in that engine's memo."""
        owners = self._owners
        by_owner: dict[int, tuple[Engine, dict[str, list[int]]]] = {}
        for kind, positions in unseen.items():
            owner = owners[kind]
            by_owner.setdefault(id(owner), (owner, {}))[1][kind] = positions
        for owner, kinds in by_owner.values():
            owner._scan_unseen(listed, kinds, answers)
            remembered = [p for positions in kinds.values() for p in positions if p in keys]
            owner._memo.put_all([keys[p] for p in remembered], [answers[p] for p in remembered])

    def _scan_unseen(
        self,
        listed: list[Target],
        unseen: dict[str, list[int]],
        answers: list[tuple[Rule, ...] | None],
    ) -> None:
        """Fill ``answers`` at the ``unseen`` positions (by kind)."""
        # libinjection answers by (operator, value): repeated values (the same text in
        # every element of a JSON array) are judged once per request.
        verdicts: dict[tuple[str, str], bool] = {}
        scratches = self._scratches.get()
        kinds = self.plan.kinds
        single: list[int] = []
        for kind, positions in unseen.items():
            batched = positions
            named = kinds[kind].named
            if named:
                single.extend(p for p in positions if listed[p].name.lower() in named)
                batched = [p for p in positions if listed[p].name.lower() not in named]
            found = None
            if len(batched) >= BATCH_MIN_TARGETS:
                batch = [listed[i] for i in batched]
                found = rules_batched(self.plan, kind, batch, verdicts, scratches)
            if found is None:
                single.extend(batched)
                continue
            for position, rules in zip(batched, found, strict=True):
                answers[position] = tuple(rules)
        if single:
            each = rules_each(self.plan, [listed[i] for i in single], verdicts, scratches)
            for position, rules in zip(single, each, strict=True):
                answers[position] = tuple(rules)


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
