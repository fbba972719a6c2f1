"""The memo: recent answers by (kind, name, value).

What a value matches depends only on its kind, name and text, and request after request
repeats most of them (header values, parameter names): a dict lookup replaces the scans.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from wardgate.filters.waf.rules import Rule
from wardgate.filters.waf.targets import Target

MEMO_SIZE = 8192
"""Distinct (kind, name, value) answers a memo keeps; past it the memo starts over."""
MEMO_VALUE_MAX = 256
"""Longer values are not remembered (they rarely repeat, and would make the memo large)."""

Key = tuple[str, str, str]


class Memo:
    """A bounded map (kind, name, value) -> the rules that value matches.

    Shared by threads without a lock: each method is one or two dict operations, each of
    them atomic, and an answer is the same whichever thread stored it. Values longer than
    :data:`MEMO_VALUE_MAX` are neither stored nor looked up."""

    __slots__ = ("_answers",)

    def __init__(self) -> None:
        self._answers: dict[Key, tuple[Rule, ...]] = {}

    def get(self, kind: str, name: str, value: str) -> tuple[Rule, ...] | None:
        """The remembered answer, or ``None``."""
        if len(value) > MEMO_VALUE_MAX:
            return None
        return self._answers.get((kind, name, value))

    @property
    def lookup(self) -> Callable[[Key], tuple[Rule, ...] | None]:
        """:meth:`get` without the length check, for a hot loop that checks
        :data:`MEMO_VALUE_MAX` itself (one call per value instead of two)."""
        return self._answers.get

    def make_room(self) -> None:
        """Start over when full: a flood of unseen values only ever costs the memo."""
        if len(self._answers) > MEMO_SIZE:
            self._answers.clear()

    def put_all(
        self, targets: Sequence[Target], answers: Sequence[tuple[Rule, ...] | None]
    ) -> None:
        """Remember every target's answer (``None``: no rule), after :meth:`make_room`."""
        self.make_room()
        table = self._answers
        for target, answer in zip(targets, answers, strict=True):
            if len(target.value) <= MEMO_VALUE_MAX:
                table[(target.kind, target.name, target.value)] = answer or ()

    def forget(self) -> None:
        """Forget every answer (tests and the cold benchmark)."""
        self._answers.clear()

    def __len__(self) -> int:
        return len(self._answers)
